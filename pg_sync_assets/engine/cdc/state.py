"""Where a `cdc` table's target records how far it has applied its source's changes.

One row per target table, in the staging schema of the target database, written in the
same transaction as the rows it describes: `applied_lsn` means every source transaction
that committed before it is in the table and none after. A run after a crash reads it
and skips what was already applied, whatever position the slot was left at. The row
also keeps the table's row count, kept exact by each run (no count of the whole table).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2 import sql

from ..load.staging import STAGING_SCHEMA, create_if_missing
from ..plan.spec import TableRef
from .pgoutput import lsn_int, lsn_text

STATE_TABLE = "cdc_positions"


@dataclass(frozen=True)
class Position:
    slot: str
    applied_lsn: int
    applied_at: datetime
    target_rows: int


def _table() -> sql.Identifier:
    return sql.Identifier(STAGING_SCHEMA, STATE_TABLE)


def ensure_state_table(cur) -> None:
    """Autocommit; the staging schema exists."""
    create_if_missing(
        cur,
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " target_schema text NOT NULL, target_table text NOT NULL, slot text NOT NULL,"
            " applied_lsn pg_lsn NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
            " target_rows bigint NOT NULL,"
            " PRIMARY KEY (target_schema, target_table))"
        ).format(_table()),
    )


def read_position(cur, table: TableRef) -> Position | None:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (_table().as_string(cur),))
    if not cur.fetchone()[0]:
        return None
    cur.execute(
        sql.SQL(
            "SELECT slot, applied_lsn::text, applied_at, target_rows FROM {}"
            " WHERE target_schema = %s AND target_table = %s"
        ).format(_table()),
        (table.schema, table.name),
    )
    row = cur.fetchone()
    return None if row is None else Position(row[0], lsn_int(row[1]), row[2], row[3])


def write_position(cur, table: TableRef, slot: str, lsn: int, target_rows: int) -> None:
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (target_schema, target_table, slot, applied_lsn, applied_at, target_rows)"
            " VALUES (%s, %s, %s, %s::pg_lsn, now(), %s)"
            " ON CONFLICT (target_schema, target_table) DO UPDATE SET slot = EXCLUDED.slot,"
            " applied_lsn = EXCLUDED.applied_lsn, applied_at = EXCLUDED.applied_at,"
            " target_rows = EXCLUDED.target_rows"
        ).format(_table()),
        (table.schema, table.name, slot, lsn_text(lsn), target_rows),
    )


def forget_position(cur, table: TableRef) -> None:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (_table().as_string(cur),))
    if cur.fetchone()[0]:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE target_schema = %s AND target_table = %s").format(_table()),
            (table.schema, table.name),
        )


def slot_positions(cur, slot: str, tables: list[TableRef]) -> dict[TableRef, int]:
    """The recorded positions of `tables` (those recorded for `slot`), for advancing it."""
    out: dict[TableRef, int] = {}
    for table in tables:
        position = read_position(cur, table)
        if position is not None and position.slot == slot:
            out[table] = position.applied_lsn
    return out
