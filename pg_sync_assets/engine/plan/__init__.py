"""Plan: what a table entry means on the two servers before any row moves (the spec, the
catalogs, user SQL, schema changes, partition windows)."""
