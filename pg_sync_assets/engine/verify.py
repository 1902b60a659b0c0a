"""Row counts and checksums of a scope, computed in SQL on each server.

The checksum is the sum of a 64-bit hash (hashtextextended) of each row's canonical
text, `ROW(explicit columns)::text`, in a session whose text-rendering settings are
pinned (see `sql.PINNED_TEXT_SETTINGS`). A sum is order-independent, runs as a
parallel aggregate, and unlike XOR does not cancel out a row that appears twice.
No row leaves the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from psycopg2 import sql

from .introspect import table_columns
from .plan import plan_table
from .spec import TableSpec
from .sql import pin_text_settings, source_scope, target_scope


@dataclass(frozen=True)
class ScopeChecksum:
    rows: int
    checksum: Decimal

    @property
    def checksum_hex(self) -> str:
        """The sum folded to 64 bits, for display."""
        return f"{int(self.checksum) % (1 << 64):016x}"


def row_hash(columns: list[str]) -> sql.Composed:
    """The 64-bit hash of a row's canonical text over `columns`."""
    row_text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    return sql.SQL("hashtextextended({}, 0)").format(row_text)


def checksum_select(columns: list[str]) -> sql.Composed:
    return sql.SQL("count(*), COALESCE(sum({}), 0)").format(row_hash(columns))


def _run(cur, statement: sql.Composed) -> ScopeChecksum:
    pin_text_settings(cur)
    cur.execute(statement)
    rows, total = cur.fetchone()
    return ScopeChecksum(rows, Decimal(total))


def source_checksum(cur, spec: TableSpec, columns: list[str]) -> ScopeChecksum:
    return _run(cur, source_scope(spec, checksum_select(columns)))


def target_checksum(cur, spec: TableSpec, columns: list[str]) -> ScopeChecksum:
    return _run(cur, target_scope(spec, checksum_select(columns)))


@dataclass(frozen=True)
class TableComparison:
    """Source scope against target scope; `problem` says why the target has no figures."""

    source: ScopeChecksum
    target: ScopeChecksum | None
    columns: tuple[str, ...]
    problem: str | None = None
    basis: str = "compared live, source and target now"
    window: str | None = None  # an incremental run's window, when the comparison covers one

    @property
    def rows_match(self) -> bool:
        return self.target is not None and self.source.rows == self.target.rows

    @property
    def checksums_match(self) -> bool:
        return self.rows_match and self.target is not None and self.source.checksum == self.target.checksum


def compare_table(spec: TableSpec, source_conn, target_conn) -> TableComparison:
    """Count and checksum both scopes over the source's columns, one query a side."""
    source_conn.rollback()
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    target_conn.rollback()
    try:
        with source_conn.cursor() as scur, target_conn.cursor() as tcur:
            plan = plan_table(scur, spec)
            columns = plan.column_names
            source = source_checksum(scur, spec, columns)
            present = {c.name for c in table_columns(tcur, spec.target)}
            if not present:
                return TableComparison(
                    source,
                    None,
                    tuple(columns),
                    f"target table `{spec.target}` does not exist; materialize the asset",
                )
            missing = [c for c in columns if c not in present]
            if missing:
                return TableComparison(
                    source, None, tuple(columns), f"target table `{spec.target}` lacks column(s) {missing}"
                )
            return TableComparison(source, target_checksum(tcur, spec, columns), tuple(columns))
    finally:
        source_conn.rollback()
        target_conn.rollback()


def null_cursor_count(source_conn, spec: TableSpec) -> int:
    """Source rows in scope whose `incremental_column` is NULL: no window reaches them."""
    source_conn.rollback()
    try:
        with source_conn.cursor() as cur:
            is_null = sql.SQL("{} IS NULL").format(sql.Identifier(spec.incremental_column))
            cur.execute(source_scope(spec, sql.SQL("count(*)"), is_null))
            return cur.fetchone()[0]
    finally:
        source_conn.rollback()
