"""An integer cursor: `incremental` without partitions, for append-only tables keyed by
a serial id (no timestamp to partition on).

A run reads the target's maximum of the column, subtracts `lookback_rows`, and syncs the
source rows above that floor: copied, upserted, and verified over that same range
(`id > floor` on both sides). `lookback_rows` re-reads the newest rows again, for ids
handed out before a transaction that committed late. Rows changed below the floor are
not read again (the mode assumes appends); the checks over the whole table show them,
and a reconcile or a full refresh repairs them.
"""

from __future__ import annotations

from psycopg2 import sql

from .introspect import table_exists
from .spec import TableSpec


def integer_cursor_floor(target_conn, spec: TableSpec) -> int | None:
    """The target's maximum of `incremental_column` minus `lookback_rows`; None when the
    target is missing or empty (the run then copies every row)."""
    with target_conn.cursor() as cur:
        if not table_exists(cur, spec.target):
            return None
        column = sql.Identifier(spec.incremental_column)
        cur.execute(sql.SQL("SELECT max({}) FROM {}").format(column, spec.target.ident))
        top = cur.fetchone()[0]
    return None if top is None else int(top) - spec.lookback_rows


def above(column: str, floor: int) -> sql.Composed:
    """The run's scope: `column > floor`, in the column's own type."""
    return sql.SQL("{} > {}").format(sql.Identifier(column), sql.Literal(floor))
