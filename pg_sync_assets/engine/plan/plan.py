"""What a sync of one table will move: the source columns and the key, checked
against the source catalog. Used when definitions load (to reject a bad table list
early) and at the start of every run (the catalog may have changed since)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from ..errors import ConfigError
from ..sql import source_scope
from .introspect import Column, primary_key, query_columns, table_columns, table_exists
from .side_effects import require_side_effect_free
from .spec import Mode, TableSpec

# The column types an hourly window can be expressed in exactly (`window.py`).
CURSOR_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
# The column types of an integer cursor (`incremental` without partitions).
INTEGER_CURSOR_TYPES = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class TablePlan:
    spec: TableSpec
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # `columns.exclude` names the source lacks: target-only columns the sync leaves alone,
    # or typos (`run.preflight` tells them apart with the target's columns).
    excluded_elsewhere: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def key_columns(self) -> list[Column]:
        by_name = {c.name: c for c in self.columns}
        return [by_name[k] for k in self.key]


def _entry(spec: TableSpec) -> str:
    return f"table entry `{spec.name}`"


def _read_columns(cur, spec: TableSpec) -> list[Column]:
    if spec.source is not None:
        if not table_exists(cur, spec.source):
            raise ConfigError(
                f"{_entry(spec)}: source table `{spec.source}` does not exist in the source "
                "database; check `source` (schema.table, names as written, case-sensitive)"
            )
        return table_columns(cur, spec.source)
    try:
        return query_columns(cur, spec.query or "", spec.name)
    except psycopg2.Error as exc:
        cur.connection.rollback()
        raise ConfigError(
            f"{_entry(spec)}: `query` fails on the source: {exc.pgerror or exc}".strip()
        ) from None


def _check_where(cur, spec: TableSpec) -> None:
    if not spec.where:
        return
    try:
        cur.execute(sql.SQL("{} LIMIT 0").format(source_scope(spec, sql.SQL("1"))))
    except psycopg2.Error as exc:
        cur.connection.rollback()
        raise ConfigError(
            f"{_entry(spec)}: `where` condition {spec.where!r} fails on the source: "
            f"{(exc.pgerror or str(exc)).strip()}; it must be a SQL condition on the source columns"
        ) from None


def _select_columns(spec: TableSpec, columns: list[Column], key: tuple[str, ...]) -> list[Column]:
    """The columns `columns:` keeps, in source order; ConfigError for a name the source
    lacks or a key or cursor column left out (a key chosen by the catalog is only known
    now; one written in the table list was already refused at load)."""
    what = spec.columns_key
    if what is None:
        return columns
    names = [c.name for c in columns]
    unknown = [c for c in spec.columns_include if c not in names]
    if unknown and not spec.columns_where_present:
        raise ConfigError(
            f"{_entry(spec)}: `{what}` names column(s) {unknown} that the source does not have; "
            f"available columns: {names}"
        )
    kept = [c for c in columns if spec.selects(c.name)]
    left_out = [k for k in key if not spec.selects(k)]
    if left_out:
        raise ConfigError(
            f"{_entry(spec)}: `{what}` leaves out key column(s) {left_out} (the source's primary "
            "key): a row cannot be matched without its key; keep them, or set `primary_key` to "
            "other columns that identify a row"
        )
    if spec.incremental_column and not spec.selects(spec.incremental_column):
        raise ConfigError(
            f"{_entry(spec)}: `{what}` leaves out the `incremental_column` "
            f"{spec.incremental_column!r}, which every window is verified on; keep it"
        )
    if not kept:
        raise ConfigError(f"{_entry(spec)}: `{what}` leaves no column to copy")
    return kept


_UNREADABLE = """
SELECT current_user, c FROM unnest(%s::text[]) AS c
WHERE NOT has_column_privilege(format('%%I.%%I', %s::text, %s::text)::regclass, c, 'SELECT')
"""


def _require_readable(cur, spec: TableSpec, names: list[str]) -> None:
    """The source role may SELECT every copied column (a table-level grant, or a grant on
    each column): `check` says so before a run meets "permission denied"."""
    if spec.source is None:  # a query that cannot be read already failed to describe itself
        return
    cur.execute(_UNREADABLE, (names, spec.source.schema, spec.source.name))
    denied = cur.fetchall()
    if denied:
        raise ConfigError(
            f"{_entry(spec)}: the source role `{denied[0][0]}` may not read column(s) "
            f"{[c for _, c in denied]} of `{spec.source}`; grant it SELECT on the table or on those "
            "columns (GRANT SELECT (column, ...) ON ...), or leave them out with `columns: {exclude: [...]}`"
        )


def plan_table(cur, spec: TableSpec) -> TablePlan:
    """Read and check the source side of `spec`; raises ConfigError naming the entry."""
    require_side_effect_free(cur, spec, "source")  # before any of the table list's SQL runs
    columns = _read_columns(cur, spec)
    elsewhere = tuple(c for c in spec.columns_exclude if c not in {x.name for x in columns})
    key = spec.primary_key
    if not key and spec.source is not None:
        key = primary_key(cur, spec.source)
    columns = _select_columns(spec, columns, tuple(c for c in key if c in {x.name for x in columns}))
    names = [c.name for c in columns]
    _require_readable(cur, spec, names)
    missing = [k for k in key if k not in names]
    if missing:
        raise ConfigError(
            f"{_entry(spec)}: `primary_key` column(s) {missing} do not exist in the source; "
            f"available columns: {names}"
        )
    if spec.incremental_column and spec.incremental_column not in names:
        raise ConfigError(
            f"{_entry(spec)}: `incremental_column` {spec.incremental_column!r} does not exist "
            f"in the source; available columns: {names}"
        )
    if spec.incremental_column and spec.by_integer_cursor:
        cursor = columns[names.index(spec.incremental_column)]
        if cursor.type_key not in INTEGER_CURSOR_TYPES:
            raise ConfigError(
                f"{_entry(spec)}: `incremental_column` {spec.incremental_column!r} is "
                f"{cursor.type_key}; without `partition_start` it must be an integer column "
                f"({', '.join(INTEGER_CURSOR_TYPES)}); for hourly partitions on a time column, "
                "set `partition_start`"
            )
    elif spec.incremental_column:
        cursor = columns[names.index(spec.incremental_column)]
        if re.sub(r"\(\d+\)", "", cursor.type_key) not in CURSOR_TYPES:
            raise ConfigError(
                f"{_entry(spec)}: `incremental_column` {spec.incremental_column!r} is "
                f"{cursor.type_key}; hourly partitions need one of {list(CURSOR_TYPES)}"
            )
    if spec.mode in (Mode.MERGE, Mode.INCREMENTAL) and not key:
        raise ConfigError(
            f"{_entry(spec)}: mode `{spec.mode.value}` needs a key, and source "
            f"`{spec.source_label}` has no primary key; set `primary_key: [column, ...]` "
            "to columns that identify a row, or use mode `full_refresh`"
        )
    _check_where(cur, spec)
    return TablePlan(spec, tuple(columns), tuple(key), elsewhere)
