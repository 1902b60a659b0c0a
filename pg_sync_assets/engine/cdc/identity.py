"""Whether a table's changes can name its rows: `mode: cdc` needs a key, and a replica
identity that sends that key with every UPDATE and DELETE."""

from __future__ import annotations

from ..errors import ConfigError
from ..plan.plan import TablePlan
from ..plan.spec import TableRef, TableSpec

_IDENTITY = """
SELECT c.oid, c.relkind, c.relreplident,
       (SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = c.oid AND i.indisprimary),
       (SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""


def source_identity(scur, spec: TableSpec, plan: TablePlan) -> int:
    """The source table's oid; ConfigError naming the table and the fix when its changes
    cannot be applied by key."""
    label = f"table entry `{spec.name}` (`{spec.source}`)"
    if not plan.key:
        raise ConfigError(
            f"{label} is `mode: cdc` but has no key: give the source table a primary key, or set "
            "`primary_key:` to the columns of a unique index"
        )
    scur.execute(_IDENTITY, (spec.source.schema, spec.source.name))
    oid, kind, ident, primary, index = scur.fetchone()
    if kind != "r":
        raise ConfigError(
            f"{label} is `mode: cdc`, which follows plain tables; `{spec.source}` is "
            f"{'a partitioned table' if kind == 'p' else 'not a table'}: list its partitions, or use `merge`"
        )
    key = sorted(plan.key)
    if ident == "f":
        return oid
    fix = (
        f"run `ALTER TABLE {spec.source} REPLICA IDENTITY USING INDEX <a unique index on "
        f"{', '.join(plan.key)}>` (or `REPLICA IDENTITY FULL`) on the source"
    )
    if ident == "d" and primary is not None and sorted(primary) == key:
        return oid
    if ident == "i" and index is not None and sorted(index) == key:
        return oid
    sends = {
        "d": f"its primary key {sorted(primary) if primary else '(none)'}",
        "i": f"the columns of its replica identity index {index}",
        "n": "nothing (REPLICA IDENTITY NOTHING)",
    }[ident]
    raise ConfigError(
        f"{label} is `mode: cdc` with key {list(plan.key)}, but the source sends {sends} with its "
        f"updates and deletes, so a changed row could not be found by its key; {fix}"
    )


def relation_columns(scur, table: TableRef) -> list[str]:
    """The columns the change stream carries for `table`, in order (no generated ones)."""
    scur.execute(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0"
        " AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        (table.ident.as_string(scur),),
    )
    return [r[0] for r in scur.fetchall()]
