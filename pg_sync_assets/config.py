"""The table list: YAML -> validated, frozen `TableSpec`s.

Pure: `parse_config` takes the already-loaded document, `load_config` reads the file.
Every error names the file, the table entry, the key and the bad value, and says what
is allowed. Checks that need the source catalog (does the table exist, has it a primary
key) live in `engine.plan` and run when definitions load and again at each run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .engine.errors import ConfigError
from .engine.spec import Mode, TableRef, TableSpec
from .naming import VALID_NAME, derive_asset_name

DEMO_CONFIG = Path(__file__).parent / "demo" / "tables.yaml"
CONFIG_ENV = "PG_SYNC_CONFIG"

TOP_LEVEL_KEYS = ("tables",)
TABLE_KEYS = (
    "name",
    "source",
    "query",
    "target",
    "primary_key",
    "mode",
    "where",
    "delete_missing",
    "verify",
    "incremental_column",
    "partition_start",
)
SUPPORTED_MODES = (Mode.FULL_REFRESH.value, Mode.MERGE.value)


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEMO_CONFIG)


def load_config(path: Path | str) -> list[TableSpec]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the table list `{path}` ({exc.strerror}); set {CONFIG_ENV} to "
            "the path of your tables YAML file"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"`{path}` is not valid YAML: {exc}") from None
    return parse_config(document, source_name=str(path))


def parse_config(document: Any, source_name: str = "<config>") -> list[TableSpec]:
    where = f"`{source_name}`"
    if not isinstance(document, dict) or not isinstance(document.get("tables"), list):
        raise ConfigError(f"{where}: expected a top-level `tables:` list of table entries")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; allowed: {list(TOP_LEVEL_KEYS)}")
    if not document["tables"]:
        raise ConfigError(f"{where}: `tables` is empty; list at least one table")
    specs = [_parse_entry(entry, i + 1, where) for i, entry in enumerate(document["tables"])]
    _reject_duplicates(specs, where)
    return specs


class _Entry:
    """Reads one table entry and builds errors that say where the problem is."""

    def __init__(self, raw: dict, number: int, where: str) -> None:
        self.raw = raw
        label = raw.get("name") or raw.get("target") or raw.get("source") or "?"
        self.where = f"{where}, table entry {number} (`{label}`)"

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}")

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(f"`{key}` is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"`{key}` must be a non-empty string, got {value!r}")
        return value

    def table(self, key: str) -> TableRef | None:
        value = self.text(key)
        if value is None:
            return None
        ref = TableRef.parse(value)
        if not ref.schema or not ref.name:
            raise self.error(f"`{key}` must be `schema.table` (names as written, no quotes), got {value!r}")
        return ref

    def columns(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(f"`{key}` must be a list of column names, got {value!r}")
        if len(set(value)) != len(value):
            raise self.error(f"`{key}` lists a column twice: {value!r}")
        return tuple(value)


def _parse_entry(raw: Any, number: int, where: str) -> TableSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}, table entry {number}: expected a mapping of keys, got {raw!r}")
    entry = _Entry(raw, number, where)
    unknown = sorted(set(raw) - set(TABLE_KEYS))
    if unknown:
        raise entry.error(f"unknown key(s) {unknown}; allowed keys: {list(TABLE_KEYS)}")
    source, query = entry.table("source"), entry.text("query")
    if (source is None) == (query is None):
        raise entry.error("set exactly one of `source` (schema.table) or `query` (a SELECT)")
    target = entry.table("target") or source
    if target is None:
        raise entry.error("a `query` source needs a `target` (schema.table in the target database)")
    mode_text = raw.get("mode", Mode.FULL_REFRESH.value)
    if mode_text == Mode.INCREMENTAL.value:
        raise entry.error(
            "mode `incremental` is not available in this version; use `merge` "
            "(incremental_column and partition_start are reserved for it)"
        )
    if mode_text not in SUPPORTED_MODES:
        raise entry.error(f"`mode` is {mode_text!r}; allowed: {list(SUPPORTED_MODES)}")
    mode = Mode(mode_text)
    primary_key = entry.columns("primary_key")
    if mode is Mode.MERGE and query is not None and not primary_key:
        raise entry.error("mode `merge` with a `query` source needs `primary_key: [column, ...]`")
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
    return TableSpec(
        name=_asset_name(entry, target),
        verify=verify,
        target=target,
        source=source,
        query=query,
        primary_key=primary_key,
        mode=mode,
        where=entry.text("where"),
        delete_missing=delete_missing,
        incremental_column=entry.text("incremental_column"),
        partition_start=entry.text("partition_start"),
    )


def _asset_name(entry: _Entry, target: TableRef) -> str:
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


def _reject_duplicates(specs: list[TableSpec], where: str) -> None:
    seen_names: dict[str, TableSpec] = {}
    seen_targets: dict[TableRef, TableSpec] = {}
    for spec in specs:
        other = seen_names.setdefault(spec.name, spec)
        if other is not spec:
            raise ConfigError(
                f"{where}: asset name `{spec.name}` is used by target `{other.target}` and by "
                f"target `{spec.target}`; set a distinct `name:` on one of them"
            )
        other = seen_targets.setdefault(spec.target, spec)
        if other is not spec:
            raise ConfigError(
                f"{where}: target table `{spec.target}` is written by both `{other.name}` and "
                f"`{spec.name}`; each target table may appear once"
            )
