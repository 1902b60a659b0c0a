"""Row counts and checksums of a scope, computed in SQL on each server.

The checksum is the sum of a 64-bit hash of each row (`row_hash`). A sum is
order-independent, runs as a parallel aggregate, and unlike XOR does not cancel out a
row that appears twice. No row leaves the server.

A row's hash sees what its text would show, at a third less cost than rendering the row
as text: each column enters `hash_record_extended` in the form `introspect.hash_as`
picks for its type (its own hash where `=` means identical, the bytes of a text, the
binary send form, or its text under pinned settings, `sql.PINNED_TEXT_SETTINGS`), and
the record's hash, a sum of the columns' hashes weighted by position, is hashed once
more so that two rows swapping a value between them change the table's sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from psycopg2 import sql

from ..plan.introspect import BYTES_HASH, OWN_HASH, TEXT_HASH, Column, table_columns
from ..plan.plan import plan_table
from ..plan.side_effects import require_side_effect_free
from ..plan.spec import TableSpec
from ..sql import pin_text_settings, source_scope, target_scope


@dataclass(frozen=True)
class ScopeChecksum:
    rows: int
    checksum: Decimal

    @property
    def checksum_hex(self) -> str:
        """The sum folded to 64 bits, for display."""
        return f"{int(self.checksum) % (1 << 64):016x}"


def _hashed(column: Column) -> sql.Composable:
    ident = sql.Identifier(column.name)
    if column.hash_as == OWN_HASH:
        return ident
    if column.hash_as == BYTES_HASH:
        return sql.SQL("{} COLLATE {}").format(ident, sql.Identifier("pg_catalog", "C"))
    if column.hash_as == TEXT_HASH:
        return sql.SQL("({})::text").format(ident)
    return sql.SQL("{}({})").format(sql.Identifier("pg_catalog", column.hash_as), ident)


def row_hash(columns: Sequence[Column]) -> sql.Composed:
    """The 64-bit hash of a row over `columns` (see the module docstring)."""
    record = sql.SQL("pg_catalog.hash_record_extended(ROW({}), 0)").format(
        sql.SQL(", ").join(_hashed(c) for c in columns)
    )
    return sql.SQL("pg_catalog.hashtextextended({}::text, 0)").format(record)


def checksum_select(columns: Sequence[Column]) -> sql.Composed:
    return sql.SQL("count(*), COALESCE(sum({}), 0)").format(row_hash(columns))


def _run(cur, statement: sql.Composed) -> ScopeChecksum:
    pin_text_settings(cur)
    cur.execute(statement)
    rows, total = cur.fetchone()
    return ScopeChecksum(rows, Decimal(total))


def source_checksum(cur, spec: TableSpec, columns: Sequence[Column]) -> ScopeChecksum:
    return _run(cur, source_scope(spec, checksum_select(columns)))


def target_checksum(cur, spec: TableSpec, columns: Sequence[Column]) -> ScopeChecksum:
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
    scope: str | None = None  # the rows compared, when not the table's whole scope (a cdc run's keys)

    @property
    def rows_match(self) -> bool:
        return self.target is not None and self.source.rows == self.target.rows

    @property
    def checksums_match(self) -> bool:
        return self.rows_match and self.target is not None and self.source.checksum == self.target.checksum


def as_text(columns: Sequence[Column]) -> list[Column]:
    """`columns` hashed by their text: equal on two sides whose types differ."""
    return [replace(c, hash_as=TEXT_HASH) for c in columns]


def compare_table(spec: TableSpec, source_conn, target_conn) -> TableComparison:
    """Count and checksum both scopes over the source's columns, one query a side."""
    source_conn.rollback()
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    target_conn.rollback()
    try:
        with source_conn.cursor() as scur, target_conn.cursor() as tcur:
            columns = plan_table(scur, spec).columns
            require_side_effect_free(tcur, spec, "target")
            names = tuple(c.name for c in columns)
            present = {c.name: c for c in table_columns(tcur, spec.target)}
            if any(c.name in present and present[c.name].type_key != c.type_key for c in columns):
                columns = as_text(columns)  # a typed hash of one side would not match the other's
            source = source_checksum(scur, spec, columns)
            if not present:
                return TableComparison(
                    source,
                    None,
                    names,
                    f"target table `{spec.target}` does not exist; materialize the asset",
                )
            missing = [n for n in names if n not in present]
            if missing:
                return TableComparison(
                    source, None, names, f"target table `{spec.target}` lacks column(s) {missing}"
                )
            return TableComparison(source, target_checksum(tcur, spec, columns), names)
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
