"""The table list: YAML -> validated, frozen `TableSpec`s.

Pure: `parse_config` takes the already-loaded document, `load_config` reads the file.
The keys of one entry are read by `entry_keys.py`; this module assembles the entries,
the defaults, the patterns (`patterns.py`) and the list-wide checks.
Every error names the file, the table entry, the key and the bad value, and says what
is allowed. Checks that need the source catalog (does the table exist, has it a primary
key) live in `engine.plan.plan` and run when definitions load and again at each run.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .connections import check_roles, parse_connections
from .definition_names import reject_name_collisions
from .engine.compare.differential import DIFFERENTIAL_CHOICES
from .engine.errors import ConfigError
from .engine.load.triggers import TARGET_TRIGGER_CHOICES
from .engine.plan.evolve import ON_SCHEMA_CHANGE_CHOICES
from .engine.plan.spec import Mode, TableRef, TableSpec
from .engine.plan.user_sql import clean_query, clean_where
from .entry_keys import (
    EntryReader,
    cdc_entry_rules,
    cdc_max_lag,
    choice,
    column_selection,
    incremental_keys,
    lock_keys,
    parallel_key,
    snapshot_group_key,
    valid_cron,
)
from .naming import VALID_NAME, derive_asset_name
from .patterns import expand, is_pattern, read_state, state_path
from .presentation import PRESENTATION_KEYS, presentation_keys
from .project import Project, ScheduleSettings, TableEntry, with_feeds

__all__ = ["CONFIG_ENV", "DEMO_CONFIG", "Project", "ScheduleSettings", "TableEntry", "load_project"]

DEMO_CONFIG = Path(__file__).parent / "demo" / "tables.yaml"
CONFIG_ENV = "PG_SYNC_CONFIG"

TOP_LEVEL_KEYS = ("name", "connections", "defaults", "tables", "schedules")
TABLE_KEYS = (
    "name",
    "source",
    "query",
    "target",
    "primary_key",
    "mode",
    "where",
    "columns",
    "on_schema_change",
    "target_triggers",
    "parallel",
    "snapshot_group",
    "delete_missing",
    "verify",
    "incremental_column",
    "partition_start",
    "timezone",
    "lookback",
    "lookback_rows",
    "schedule",
    "lock_timeout",
    "lock_attempt_timeout",
    "differential",
    "cdc_max_lag_mb",
    *PRESENTATION_KEYS,
)
# Keys that `defaults:` may set for every entry (an entry's own value wins).
DEFAULT_KEYS = (
    "verify",
    "lock_timeout",
    "lock_attempt_timeout",
    "differential",
    "on_schema_change",
    "target_triggers",
    "parallel",
    "cdc_max_lag_mb",
    *PRESENTATION_KEYS,
)
SCHEDULE_KEYS = ("running", "minute_of_hour", "daily_cron", "cdc_cron")
SUPPORTED_MODES = tuple(m.value for m in Mode)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"the key `{key}` is given twice in one mapping (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); keep one"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def config_path() -> Path:
    """PG_SYNC_CONFIG; the bundled demo list only where no source is configured, so that a
    deployment that forgot PG_SYNC_CONFIG fails instead of syncing the demo's tables."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if os.environ.get("PG_SYNC_SOURCE_URL"):
        raise ConfigError(
            f"PG_SYNC_SOURCE_URL is set but {CONFIG_ENV} is not: set {CONFIG_ENV} to the path of your "
            "table list (the bundled demo list is used only when no source is configured)"
        )
    return DEMO_CONFIG


def load_config(path: Path | str) -> list[TableSpec]:
    """The engine specs of a table list file (tests and scripts; Dagster uses `load_project`)."""
    return load_project(path).specs


def read_table_list(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the table list `{path}` ({exc.strerror}); set {CONFIG_ENV} to "
            "the path of your tables YAML file"
        ) from None


def load_project(path: Path | str) -> Project:
    """Connections, tables and schedule settings of one YAML file (patterns expanded from
    the state file beside it)."""
    path = Path(path)
    text = read_table_list(path)
    return parse_project(parse_yaml(text, str(path)), source_name=str(path), state_file=state_path(path))


def parse_yaml(text: str, source_name: str) -> Any:
    """YAML with duplicate keys refused; errors name `source_name`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"`{source_name}` is not valid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"`{source_name}`: {exc}") from None


def parse_schedules(raw: Any, source_name: str = "<config>") -> ScheduleSettings:
    where = f"`{source_name}`, `schedules`"
    if raw is None:
        return ScheduleSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {list(SCHEDULE_KEYS)}")
    unknown = sorted(set(raw) - set(SCHEDULE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(SCHEDULE_KEYS)}")
    settings = ScheduleSettings(**raw)
    if not isinstance(settings.running, bool):
        raise ConfigError(f"{where}: `running` must be true or false, got {settings.running!r}")
    minute = settings.minute_of_hour
    if not isinstance(minute, int) or isinstance(minute, bool) or not 0 <= minute <= 59:
        raise ConfigError(f"{where}: `minute_of_hour` must be a whole number 0 to 59, got {minute!r}")
    for key in ("daily_cron", "cdc_cron"):
        cron = getattr(settings, key)
        if not isinstance(cron, str) or not valid_cron(cron):
            raise ConfigError(f"{where}: `{key}` must be a 5-field cron string, got {cron!r}")
    return settings


def parse_config(document: Any, source_name: str = "<config>") -> list[TableSpec]:
    return parse_project(document, source_name).specs


def parse_project(document: Any, source_name: str = "<config>", state_file: Path | None = None) -> Project:
    """A loaded table list document (or a component's attributes) -> Project; pattern
    entries expand from `state_file` (`patterns.py`)."""
    where = f"`{source_name}`"
    if not isinstance(document, dict) or not isinstance(document.get("tables"), list):
        raise ConfigError(f"{where}: expected a top-level `tables:` list of table entries")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; allowed: {list(TOP_LEVEL_KEYS)}")
    if not document["tables"]:
        raise ConfigError(f"{where}: `tables` is empty; list at least one table")
    name = document.get("name")
    if name is not None and (not isinstance(name, str) or not VALID_NAME.match(name)):
        raise ConfigError(
            f"{where}: `name` prefixes job and schedule names: use only letters A-Z, a-z, digits "
            f"and _, got {name!r}"
        )
    connections = parse_connections(document.get("connections"), where)
    defaults = _defaults(document.get("defaults"), where)
    entries = []
    state = read_state(state_file)
    for number, entry in enumerate(document["tables"], start=1):
        raw = {**defaults, **entry} if isinstance(entry, dict) else entry
        if not (isinstance(raw, dict) and is_pattern(raw.get("source"))):
            entries.append(_parse_entry(raw, number, where))
            continue
        label = f"{where}, table entry {number} (`{raw['source']}`)"
        tables = expand(raw, label, state, state_file)
        if not tables:
            raise ConfigError(
                f"{label}: the pattern matched no table when `python -m pg_sync_assets check` last "
                "listed them; fix the pattern (or its `exclude`), or run `check` again"
            )
        for one in tables:
            entry = _parse_entry(one, number, where)
            entries.append(replace(entry, spec=replace(entry.spec, columns_where_present=True)))
    entries = [replace(e, list_name=name) for e in entries]
    check_roles(connections, [(e.name, e.source_connection, e.target_connection) for e in entries], where)
    entries = with_feeds(entries, connections)
    _reject_duplicates(entries, where)
    _check_groups(entries, where)
    reject_name_collisions(entries, name, where)
    return Project(
        tables=tuple(entries),
        connections=connections,
        schedules=parse_schedules(document.get("schedules"), source_name=source_name),
        name=name,
    )


def _defaults(raw: Any, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}, `defaults`: expected a mapping with keys from {list(DEFAULT_KEYS)}")
    unknown = sorted(set(raw) - set(DEFAULT_KEYS))
    if unknown:
        raise ConfigError(f"{where}, `defaults`: unknown key(s) {unknown}; allowed: {list(DEFAULT_KEYS)}")
    return raw


def _parse_entry(raw: Any, number: int, where: str) -> TableEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}, table entry {number}: expected a mapping of keys, got {raw!r}")
    entry = EntryReader(raw, number, where)
    unknown = sorted(set(raw) - set(TABLE_KEYS))
    if unknown:
        raise entry.error(f"unknown key(s) {unknown}; allowed keys: {list(TABLE_KEYS)}")
    source, query = entry.table("source"), entry.sql("query", clean_query)
    if (source is None) == (query is None):
        raise entry.error("set exactly one of `source` (schema.table) or `query` (a SELECT)")
    target = entry.table("target") or source
    if target is None:
        raise entry.error("a `query` source needs a `target` (schema.table in the target database)")
    mode_text = raw.get("mode", Mode.FULL_REFRESH.value)
    if mode_text not in SUPPORTED_MODES:
        raise entry.error(f"`mode` is {mode_text!r}; allowed: {list(SUPPORTED_MODES)}")
    mode = Mode(mode_text)
    primary_key = entry.columns("primary_key")
    if mode is not Mode.FULL_REFRESH and query is not None and not primary_key:
        raise entry.error(f"mode `{mode.value}` with a `query` source needs `primary_key: [column, ...]`")
    delete_missing = raw.get("delete_missing", False)
    if not isinstance(delete_missing, bool):
        raise entry.error(f"`delete_missing` must be true or false, got {delete_missing!r}")
    if delete_missing and mode is not Mode.MERGE:
        raise entry.error(
            "`delete_missing` applies to mode `merge` only (full_refresh "
            "already removes rows gone from the source)"
        )
    verify = raw.get("verify", True)
    if not isinstance(verify, bool):
        raise entry.error(f"`verify` must be true or false, got {verify!r}")
    schedule = entry.text("schedule")
    if schedule is not None and not valid_cron(schedule):
        raise entry.error(
            f"`schedule` must be a valid 5-field cron string such as '0 2 * * *' (minute hour "
            f"day-of-month month day-of-week), got {schedule!r}"
        )
    incremental = incremental_keys(entry, mode, schedule)
    where = entry.sql("where", clean_where)
    if mode is Mode.CDC:
        cdc_entry_rules(entry, query, where, schedule)
    spec = TableSpec(
        **lock_keys(entry),
        # incremental runs copy their window and ignore `differential` (so `defaults:` may set it)
        **choice(entry, "differential", DIFFERENTIAL_CHOICES),
        **column_selection(entry, primary_key, incremental.get("incremental_column"), where),
        **choice(entry, "on_schema_change", ON_SCHEMA_CHANGE_CHOICES),
        **choice(entry, "target_triggers", TARGET_TRIGGER_CHOICES),
        **parallel_key(entry),
        **snapshot_group_key(entry, mode, schedule),
        **incremental,
        name=_asset_name(entry, target),
        verify=verify,
        target=target,
        source=source,
        query=query,
        primary_key=primary_key,
        mode=mode,
        where=where,
        delete_missing=delete_missing,
        schedule=schedule,
        **cdc_max_lag(entry),
    )
    return TableEntry(spec, **presentation_keys(entry))


def _check_groups(entries: list[TableEntry], where: str) -> None:
    """The tables of a snapshot group share one source snapshot and one target transaction:
    one source connection, one target connection."""
    first: dict[str, TableEntry] = {}
    for entry in entries:
        group = entry.spec.snapshot_group
        if group is None:
            continue
        other = first.setdefault(group, entry)
        if (other.source_connection, other.target_connection) != (
            entry.source_connection,
            entry.target_connection,
        ):
            raise ConfigError(
                f"{where}: snapshot group `{group}` holds `{other.name}` ({other.source_connection} -> "
                f"{other.target_connection}) and `{entry.name}` ({entry.source_connection} -> "
                f"{entry.target_connection}); one group reads one snapshot and writes one transaction, "
                "so its tables must share their connections"
            )
        if (other.spec.mode is Mode.CDC) != (entry.spec.mode is Mode.CDC):
            raise ConfigError(
                f"{where}: snapshot group `{group}` holds `{other.name}` ({other.spec.mode.value}) and "
                f"`{entry.name}` ({entry.spec.mode.value}); a group's tables are either all `cdc` (their "
                "changes applied together) or none"
            )


def _asset_name(entry: EntryReader, target: TableRef) -> str:
    name = entry.text("name")
    if name is not None:
        if not VALID_NAME.match(name):
            suggestion = derive_asset_name(name)
            hint = f" (e.g. `name: {suggestion}`)" if suggestion else ""
            raise entry.error(
                f"`name` {name!r} is not a valid Dagster asset name: use only "
                f"letters A-Z, a-z, digits and _{hint}"
            )
        return name
    derived = derive_asset_name(target.name)
    if derived is None:
        raise entry.error(
            f"cannot derive an asset name from target table `{target}`; set "
            "`name:` to letters A-Z, a-z, digits and _"
        )
    return derived


def _reject_duplicates(entries: list[TableEntry], where: str) -> None:
    seen_keys: dict[tuple[str, ...], TableEntry] = {}
    seen_targets: dict[tuple[str, TableRef], TableEntry] = {}
    for entry in entries:
        other = seen_keys.setdefault(entry.key_path, entry)
        if other is not entry:
            raise ConfigError(
                f"{where}: asset key `{'/'.join(entry.key_path)}` is used by target `{other.spec.target}` "
                f"and by target `{entry.spec.target}`; set a distinct `name:` or `key_prefix:` on one of them"
            )
        other = seen_targets.setdefault((entry.target_connection, entry.spec.target), entry)
        if other is not entry:
            raise ConfigError(
                f"{where}: target table `{entry.spec.target}` is written by both `{other.name}` and "
                f"`{entry.name}` (connection `{entry.target_connection}`); each target table may appear once"
            )
