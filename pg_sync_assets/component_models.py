"""The typed attributes of `TableSyncComponent`: every key of a table list, with its type
and its description, as `dg check yaml` and the UI's component docs read them.

These models only give the YAML its shape (an unknown or misspelt key is reported by
`dg check yaml` with its line); the values then go through the same parser as a table
list file (`config.py`), whose errors name the entry, the key and what is allowed.

Credentials take Dagster's template form, `"{{ env.VAR }}"`, wherever `{env: VAR}` is
accepted: in a connection the template is not rendered into the value (it would then be
a literal password, shown on the UI's resource page) but read as `{env: VAR}`, from the
environment when a session opens.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import dagster as dg
from dagster.components import DefsStateConfigArgs
from pydantic import Field

from .engine.errors import ConfigError

ENV_TEMPLATE = re.compile(r"^\s*\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")
ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}")


class EnvVar(dg.Model):
    """A value read from the environment when a session opens (never shown)."""

    env: str = Field(description="The environment variable's name.")


Text = str | EnvVar
Number = int | str | EnvVar


class ConnectionModel(dg.Model):
    url: Text | None = Field(None, description="A libpq URI or key=value string (no password in it).")
    host: Text | None = Field(None, description="Overrides the URL's host.")
    port: Number | None = Field(None, description="Overrides the URL's port.")
    dbname: Text | None = Field(None, description="Overrides the URL's database.")
    user: Text | None = Field(None, description="Overrides the URL's user.")
    password: Text | None = Field(
        None, description='Only from the environment: "{{ env.VAR }}" or {env: VAR}.'
    )
    sslmode: Text | None = Field(
        None, description="disable, allow, prefer, require, verify-ca or verify-full."
    )
    connect_timeout: Number | None = Field(None, description="Seconds to wait for a connection.")
    cdc_slot: str | None = Field(
        None, description="`cdc` tables: the replication slot (default pg_sync_<name>)."
    )
    cdc_publication: str | None = Field(
        None, description="`cdc` tables: the publication (default pg_sync_<name>)."
    )


class ColumnsModel(dg.Model):
    include: list[str] | None = Field(None, description="Copy only these columns (the key included).")
    exclude: list[str] | None = Field(None, description="Copy every column but these.")


class RetriesModel(dg.Model):
    max_retries: int = Field(description="How often a failed materialization is tried again.")
    delay: float | None = Field(None, description="Seconds before the first retry (default 30).")
    backoff: Literal["exponential", "linear"] | None = Field(None, description="How the delay grows.")


class AutomationModel(dg.Model):
    on_cron: str | None = Field(
        None, description="Materialize after each tick of this cron (UTC), once per tick."
    )
    eager: bool | None = Field(None, description="Materialize whenever an upstream asset changes.")


class FreshnessModel(dg.Model):
    fail_window: str = Field(
        description="The asset is stale (a failure) when older than this: `90m`, `2h`, `1d`."
    )
    warn_window: str | None = Field(
        None, description="A warning when older than this (shorter than fail_window)."
    )


class Settings(dg.Model):
    """The keys `defaults:` may set; a table entry's own value wins."""

    verify: bool | None = Field(None, description="Verify before commit (default true).")
    lock_timeout: float | None = Field(None, description="Seconds a run waits, in all, for its locks (600).")
    lock_attempt_timeout: float | None = Field(
        None, description="Seconds one try at the final lock may queue readers."
    )
    differential: Literal["auto", "always", "never"] | None = Field(
        None, description="Compare first and copy only the rows that differ (auto)."
    )
    on_schema_change: Literal["fail", "add_columns", "evolve"] | None = Field(
        None, description="What a run may change in an existing target (fail)."
    )
    target_triggers: Literal["fire", "disable"] | None = Field(
        None, description="The target's triggers in the final transaction (fire)."
    )
    parallel: int | Literal["auto"] | None = Field(None, description="Sessions a side for a full copy (1).")
    cdc_max_lag_mb: int | None = Field(None, description="`cdc`: the lag check's threshold in MB (1024).")
    source_connection: str | None = Field(None, description="The connection read from (source).")
    target_connection: str | None = Field(None, description="The connection written to (target).")
    key_prefix: str | list[str] | None = Field(None, description="Asset key parts before the name.")
    group: str | None = Field(None, description="The asset's group (the target connection's name).")
    owners: list[str] | None = Field(None, description="Email addresses or team:NAME.")
    tags: dict[str, str] | None = Field(None, description="Tag -> value.")
    description: str | None = Field(None, description="The asset's description.")
    retries: int | RetriesModel | None = Field(None, description="Retry a failed materialization.")
    automation_condition: Literal["eager"] | AutomationModel | None = Field(
        None, description="Declarative automation instead of (or beside) the job schedules."
    )
    freshness: FreshnessModel | None = Field(None, description="A freshness policy on the asset.")


class TableModel(Settings):
    """One table entry: a `source` table (or a `query`) copied into a `target` table."""

    source: str | None = Field(None, description="schema.table in the source database, or a pattern.")
    query: str | None = Field(None, description="A read-only SELECT instead of a source table.")
    target: str | None = Field(
        None, description="schema.table in the target database (default: as the source)."
    )
    name: str | None = Field(None, description="The asset's name (derived from the target table).")
    primary_key: str | list[str] | None = Field(
        None, description="The key (default: the source's primary key)."
    )
    mode: Literal["full_refresh", "merge", "incremental", "cdc"] | None = Field(
        None, description="full_refresh, merge, incremental or cdc (full_refresh)."
    )
    where: str | None = Field(None, description="A condition on the source rows; the checks use it too.")
    columns: ColumnsModel | None = Field(None, description="{include: [...]} or {exclude: [...]}.")
    exclude: list[str] | None = Field(None, description="A pattern entry: tables it does not list.")
    include_views: bool | None = Field(None, description="A pattern entry: match views too.")
    delete_missing: bool | None = Field(None, description="merge: delete target rows gone from the source.")
    snapshot_group: str | None = Field(None, description="Tables synced in one snapshot and one transaction.")
    incremental_column: str | None = Field(None, description="incremental: the cursor column.")
    partition_start: str | None = Field(
        None, description="incremental: the first hourly partition, '2026-11-01-00:00'."
    )
    timezone: str | None = Field(None, description="incremental: the partitions' time zone (UTC).")
    lookback: int | None = Field(None, description="incremental: hours re-read before the window.")
    lookback_rows: int | None = Field(None, description="integer cursor: rows re-read below the maximum.")
    schedule: str | None = Field(None, description="A cron of this table's own job.")


class SchedulesModel(dg.Model):
    running: bool | None = Field(None, description="Schedules run when deployed (false: stopped).")
    minute_of_hour: int | None = Field(None, description="Hourly tables: the tick's minute (7).")
    daily_cron: str | None = Field(None, description="Batch tables without a schedule (0 2 * * *).")
    cdc_cron: str | None = Field(None, description="cdc tables: each source connection's job (*/5 * * * *).")


def _env_refs(value: Any, where: str) -> Any:
    """Connection values with `"{{ env.VAR }}"` read as `{env: VAR}`, not rendered; any
    other template in a connection is refused (it would render a secret into the value)."""
    if hasattr(value, "model_dump"):  # validated as a ConnectionModel
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {k: _env_refs(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, str):
        found = ENV_TEMPLATE.match(value)
        if found:
            return {"env": found.group(1)}
        if ANY_TEMPLATE.search(value):
            raise ConfigError(
                f"`{where}`: a connection value is a whole `{{{{ env.VAR }}}}` template or a literal; "
                "the variable is read when a session opens and never rendered into the value"
            )
    return value


def resolve_connections(context: dg.ResolutionContext, raw: Any) -> Any:
    """The `connections` attribute, its templates kept as environment references."""
    if raw is None:
        return None
    return {name: _env_refs(value, f"connections.{name}") for name, value in plain(raw).items()}


Connections = Annotated[
    dict[str, Any] | None,
    dg.Resolver(resolve_connections, model_field_type=dict[str, ConnectionModel] | None),
]


def plain(value: Any) -> Any:
    """An attribute as the table list parser reads it: models dumped, only the keys given."""
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    return value


def _given(context: dg.ResolutionContext, raw: Any) -> Any:
    """A typed attribute's value with its templates rendered (`{{ env.X }}` and others)."""
    return context.resolve_value(plain(raw))


class Attributes(dg.Model):
    """The component's attributes as `dg check yaml` validates them: each key typed as
    itself (Dagster's derived model also accepts a template string in place of any value,
    which would make a misspelt key's error point at the list that holds it)."""

    tables: list[TableModel] = Field(description="The table entries, as in a table list file.")
    connections: dict[str, ConnectionModel] | None = Field(
        None,
        description='name -> {url: ...} or fields; any value may be "{{ env.VAR }}" (or {env: VAR}), read '
        "when a session opens. Default: `source` and `target` from PG_SYNC_SOURCE_URL / PG_SYNC_TARGET_URL.",
    )
    defaults: Settings | None = Field(None, description="Keys every table entry inherits.")
    schedules: SchedulesModel | None = Field(None, description="When the jobs' schedules tick.")
    name: str | None = Field(
        None, description="Prefix of the job and schedule names (default: the folder of this defs.yaml)."
    )
    defs_state: DefsStateConfigArgs | None = Field(
        None, description="Where the pattern entries' table listing is kept (default: the local filesystem)."
    )


# Typed as themselves only (without Dagster's "or a template string" alternative), so that
# `dg check yaml` points at the misspelt key's own line, not at the list holding it.
Tables = Annotated[list[dict[str, Any]], dg.Resolver(_given, model_field_type=list[TableModel])]
DefaultsAttr = Annotated[dict[str, Any] | None, dg.Resolver(_given, model_field_type=Settings | None)]
SchedulesAttr = Annotated[dict[str, Any] | None, dg.Resolver(_given, model_field_type=SchedulesModel | None)]
