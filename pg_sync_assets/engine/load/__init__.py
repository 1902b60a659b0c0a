"""Load: rows into the target (the COPY stream, staging tables, the first load, MERGE, indexes, triggers)."""
