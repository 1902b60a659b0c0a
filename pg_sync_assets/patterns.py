"""Table patterns: `source: shop.*` in a table list stands for every matching table.

A pattern entry's `source` is `schema.table` with `*` (any run of characters) and `?`
(one character) in either part: `shop.*`, `shop.order_*`, `*.*`. `exclude:` lists
patterns of `schema.table` to leave out, `include_views: true` adds views and
materialized views, and `target: backup.*` puts each table in another schema under its
own name (default: the same schema as in the source). Every other key of the entry
applies to each table it expands to.

Which tables match is read from the source catalog, but never while definitions load
(a code location must load with the database down, and every step process loads it):
`python -m pg_sync_assets check` lists them and writes the state file beside the table
list (`tables.yaml` -> `tables.patterns.json`); loading expands each pattern from it. So
a table created in the source appears as an asset after the next `check` and a reload
of the code location; one dropped there disappears then, and until then its runs fail
naming the table. A pattern the state file does not know yet fails the load with the
command to run.

Plain Python: no Dagster import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .connections import parse_connections
from .engine import ConfigError, PgSyncError, TableRef, connect
from .engine.plan.introspect import tables_like

PATTERN_KEYS = ("exclude", "include_views")
STATE_SUFFIX = ".patterns.json"
_FORBIDDEN = ("name", "query")  # one name, one query: not for many tables


def is_pattern(source: Any) -> bool:
    return isinstance(source, str) and ("*" in source or "?" in source)


def _like(glob: str) -> str:
    """A glob part as a LIKE pattern: `*` -> `%`, `?` -> `_`, the rest literal."""
    out = []
    for ch in glob:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    """One pattern entry: what it matches on which source connection."""

    schema: str
    table: str
    exclude: tuple[str, ...]
    include_views: bool
    connection: str
    target_schema: str | None  # None: each table keeps its source schema

    @property
    def text(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def state_key(self) -> str:
        """What the listing depends on; a changed pattern must be listed again."""
        return json.dumps([self.connection, self.text, sorted(self.exclude), self.include_views])

    def excluded(self, table: TableRef) -> bool:
        return any(fnmatchcase(f"{table.schema}.{table.name}", p) for p in self.exclude)

    def list_tables(self, cur) -> list[TableRef]:
        found = tables_like(cur, _like(self.schema), _like(self.table), self.include_views)
        return [t for t in found if not self.excluded(t)]

    def target_for(self, table: TableRef) -> str:
        return f"{self.target_schema or table.schema}.{table.name}"


def parse_pattern(raw: dict, where: str) -> Pattern:
    """The pattern of a raw entry whose `source` holds `*` or `?`; ConfigError naming `where`."""
    source = raw["source"]
    schema, dot, table = source.partition(".")
    if not dot or not schema or not table:
        raise ConfigError(f"{where}: a pattern `source` is `schema.table` with `*` or `?`, got {source!r}")
    forbidden = [k for k in _FORBIDDEN if k in raw]
    if forbidden:
        raise ConfigError(f"{where}: {forbidden} cannot be set on a pattern (it stands for many tables)")
    exclude = raw.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(p, str) and "." in p for p in exclude):
        raise ConfigError(f"{where}: `exclude` must be a list of `schema.table` patterns, got {exclude!r}")
    views = raw.get("include_views", False)
    if not isinstance(views, bool):
        raise ConfigError(f"{where}: `include_views` must be true or false, got {views!r}")
    target = raw.get("target")
    target_schema = None
    if target is not None:
        t_schema, t_dot, t_table = str(target).partition(".")
        if not t_dot or t_table != "*" or not t_schema or is_pattern(t_schema):
            raise ConfigError(
                f"{where}: the `target` of a pattern is `schema.*` (each table keeps its name), "
                f"got {target!r}"
            )
        target_schema = t_schema
    return Pattern(
        schema, table, tuple(exclude), views, raw.get("source_connection", "source"), target_schema
    )


def state_path(table_list: Path) -> Path:
    return table_list.with_name(table_list.stem + STATE_SUFFIX)


def read_state(path: Path | None) -> dict[str, list[list[str]]]:
    """The listed tables of each pattern; empty when there is no state file yet."""
    if path is None or not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {key: value["tables"] for key, value in document["patterns"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the pattern state file `{path}` cannot be read ({exc}); delete it and run "
            "`python -m pg_sync_assets check` to list the tables again"
        ) from None


def expand(
    raw: dict, where: str, state: Mapping[str, list[list[str]]], state_file: Path | None
) -> list[dict]:
    """The raw entries a pattern entry stands for, one per listed table, in name order."""
    pattern = parse_pattern(raw, where)
    listed = state.get(pattern.state_key)
    if listed is None:
        hint = f"writes `{state_file}`" if state_file else "needs the table list in a file"
        raise ConfigError(
            f"{where}: the tables of pattern `{pattern.text}` have not been listed yet; run "
            f"`python -m pg_sync_assets check` (it reads the source catalog and {hint}), then load again"
        )
    common = {k: v for k, v in raw.items() if k not in (*PATTERN_KEYS, "source", "target")}
    return [
        {**common, "source": f"{schema}.{name}", "target": pattern.target_for(TableRef(schema, name))}
        for schema, name in listed
    ]


_COLUMNS_OF = """
SELECT DISTINCT a.attname FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest(%s::text[], %s::text[]) AS t(s, r) ON n.nspname = t.s AND c.relname = t.r
WHERE a.attnum > 0 AND NOT a.attisdropped
"""


def _unmatched_columns(cur, raw: dict, found: list[TableRef]) -> list[str]:
    """The names a pattern's `columns:` lists that none of its tables has (typos): a name
    some tables lack is fine, the rule applies where the column occurs."""
    selection = raw.get("columns")
    if not isinstance(selection, dict) or not found:
        return []
    names = [n for value in selection.values() if isinstance(value, list) for n in value]
    cur.execute(_COLUMNS_OF, ([t.schema for t in found], [t.name for t in found]))
    present = {row[0] for row in cur.fetchall()}
    return [n for n in names if n not in present]


def _list(
    pattern: Pattern, connections: Mapping, environ: Mapping[str, str], raw: dict | None = None
) -> list[TableRef]:
    if pattern.connection not in connections:
        raise ConfigError(
            f"pattern `{pattern.text}` reads connection `{pattern.connection}`, which is not "
            "defined; define it under `connections:`"
        )
    dsn = connections[pattern.connection].dsn(environ)
    conn = connect(dsn, readonly=True, application_name="pg_sync_assets check", role=pattern.connection)
    try:
        with conn.cursor() as cur:
            found = pattern.list_tables(cur)
            unmatched = _unmatched_columns(cur, raw or {}, found)
    finally:
        conn.close()
    if unmatched:
        raise ConfigError(
            f"pattern `{pattern.text}`: `columns` names {unmatched}, which none of its {len(found)} "
            "tables has; check the spelling (a column some tables lack is fine)"
        )
    return found


def _summary(pattern: Pattern, found: list[TableRef], before: list[list[str]] | None) -> str:
    now = {(t.schema, t.name) for t in found}
    was = {tuple(t) for t in before or []}
    line = f"pattern {pattern.text} ({pattern.connection}): {len(found)} tables"
    news = sorted(f"{s}.{n}" for s, n in now - was) if before is not None else []
    gone = sorted(f"{s}.{n}" for s, n in was - now)
    return (
        line + (f"; new: {', '.join(news)}" if news else "") + (f"; gone: {', '.join(gone)}" if gone else "")
    )


def refresh_state(document: Any, table_list: Path, out: Callable[[str], None], environ=os.environ) -> int:
    """List the tables of every pattern in `document` on its source and write the state
    file beside the table list; one line per pattern. 0, or 2 when a connection or the
    catalog fails. A list without patterns writes nothing."""
    if not pattern_entries(document):
        return 0
    return write_state(document, f"`{table_list}`", state_path(table_list), out, environ)


def pattern_entries(document: Any) -> list[dict]:
    if not isinstance(document, dict) or not isinstance(document.get("tables"), list):
        return []
    defaults = document.get("defaults") or {}
    entries = [e for e in document["tables"] if isinstance(e, dict)]
    return [{**defaults, **e} for e in entries if is_pattern(e.get("source"))]


def write_state(document: Any, where: str, path: Path, out: Callable[[str], None], environ=os.environ) -> int:
    """List the tables of every pattern in `document` and write them to `path` (the table
    list's state file, or a component's state for `dg utils refresh-defs-state`)."""
    raws = pattern_entries(document)
    listings: dict[str, list[list[str]]] = {}
    try:
        connections = parse_connections(document.get("connections"), where)
        old = read_state(path)
        for raw in raws:
            pattern = parse_pattern(raw, f"{where}, pattern `{raw['source']}`")
            found = _list(pattern, connections, environ, raw)
            out(_summary(pattern, found, old.get(pattern.state_key)))
            listings[pattern.state_key] = [[t.schema, t.name] for t in found]
    except PgSyncError as exc:
        out(str(exc))
        return 2
    state = {"patterns": {key: {"tables": tables} for key, tables in listings.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0
