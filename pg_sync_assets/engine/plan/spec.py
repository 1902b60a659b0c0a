"""What one configured table is: pure, frozen data shared by the engine and the
Dagster layer. Parsing and validation of the YAML live in `pg_sync_assets.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from psycopg2 import sql

from ..errors import ConfigError
from .user_sql import clean_query, clean_where


class Mode(str, Enum):
    FULL_REFRESH = "full_refresh"
    MERGE = "merge"
    INCREMENTAL = "incremental"
    CDC = "cdc"


@dataclass(frozen=True)
class TableRef:
    """A schema-qualified table, names taken literally (no SQL quoting)."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str) -> TableRef:
        """Split `schema.table` at the first dot; a bare name means schema `public`."""
        schema, dot, name = text.partition(".")
        return cls(schema, name) if dot else cls("public", schema)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TableSpec:
    """One entry of the table list, validated.

    `source` or `query` is set, never both. `primary_key` empty means: use the source
    table's primary key (resolved from the catalog when the sync starts).
    """

    name: str
    target: TableRef
    source: TableRef | None = None
    query: str | None = None
    primary_key: tuple[str, ...] = ()
    mode: Mode = Mode.FULL_REFRESH
    where: str | None = None
    delete_missing: bool = False
    verify: bool = True
    incremental_column: str | None = None
    partition_start: str | None = None
    timezone: str = "UTC"
    lookback: int = 0
    lookback_rows: int = 0  # integer cursor: rows re-read below the target's maximum
    schedule: str | None = None
    lock_timeout: float = 600.0  # seconds a run waits, in all, for the locks it needs
    lock_attempt_timeout: float = 2.0  # seconds one try at the final table's lock may queue readers
    # Copy only the rows that differ: `auto` when at most half the key buckets differ,
    # `always` whatever differs, `never` (always the full copy). See `differential.py`.
    differential: str = "auto"
    # `columns: {include: [...]}` or `{exclude: [...]}` (one of the two): the columns left
    # out are neither read from the source nor created in the target. See `plan.py`.
    columns_include: tuple[str, ...] = ()
    columns_exclude: tuple[str, ...] = ()
    # Set for the tables of a pattern: `columns` names a column wherever it occurs, so a
    # name this table lacks is skipped (`check` refuses a name no matched table has).
    columns_where_present: bool = False
    # What a run may change in an existing target: `fail`, `add_columns`, `evolve` (`evolve.py`).
    on_schema_change: str = "fail"
    # The target's own triggers during the final transaction: `fire` or `disable` (`triggers.py`).
    target_triggers: str = "fire"
    # Sessions a side for a full copy into staging; 0 is `auto` (`parallel_copy.py`).
    parallel: int = 1
    # Tables of one snapshot group are synced together: one source snapshot, one target
    # transaction, in foreign-key order (`group.py`).
    snapshot_group: str | None = None
    # `mode: cdc`: the `cdc_lag` check fails above this much source WAL not yet applied.
    cdc_max_lag_mb: int = 1024
    # A run's time window, narrowing the scope like `where` (set by `window.py` per run).
    window: sql.Composable | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Every spec, however it was built, carries checked SQL: see `user_sql`.
        try:
            if self.where is not None:
                object.__setattr__(self, "where", clean_where(self.where))
            if self.query is not None:
                object.__setattr__(self, "query", clean_query(self.query))
        except ConfigError as exc:
            raise ConfigError(f"table entry `{self.name}`: {exc}") from None

    @property
    def hourly(self) -> bool:
        """`incremental` with hourly partitions on a time column."""
        return self.mode is Mode.INCREMENTAL and self.partition_start is not None

    @property
    def by_integer_cursor(self) -> bool:
        """`incremental` without partitions: the rows above the target's maximum of an
        integer column, less `lookback_rows` (`window.integer_cursor_floor`)."""
        return self.mode is Mode.INCREMENTAL and self.partition_start is None

    def selects(self, column: str) -> bool:
        """Whether `column` is copied under `columns` (every column without it)."""
        if self.columns_include:
            return column in self.columns_include
        return column not in self.columns_exclude

    @property
    def columns_key(self) -> str | None:
        """`columns.include` or `columns.exclude`, for messages; None without `columns`."""
        if self.columns_include:
            return "columns.include"
        return "columns.exclude" if self.columns_exclude else None

    @property
    def source_label(self) -> str:
        return str(self.source) if self.source else "query"
