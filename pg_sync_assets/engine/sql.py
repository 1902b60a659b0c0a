"""Statement building blocks shared by the engine modules.

Identifiers always go through `sql.Identifier`, values through parameters. The only
SQL text taken as is comes from the operator's own config (`where`, `query`): trusted
code, like a dbt model, but checked by PostgreSQL's parser to be exactly one condition or
one read-only SELECT (`user_sql.py`) before it is wrapped here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

from psycopg2 import sql

from .errors import ConfigError
from .plan.spec import TableSpec
from .plan.user_sql import clean_query, clean_where

if TYPE_CHECKING:
    from .plan.introspect import Column

# Session settings that change how values render as text. Every session that renders
# rows as text for a checksum or a comparison pins them, so equal data gives equal text
# whatever the server defaults (docs/how-it-works.md, "The checks").
PINNED_TEXT_SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
}


def pin_text_settings(cur) -> None:
    for name, value in PINNED_TEXT_SETTINGS.items():
        cur.execute("SELECT set_config(%s, %s, false)", (name, value))


@contextmanager
def planner_settings(cur, settings: dict[str, str]) -> Iterator[None]:
    """`settings` for the statements inside, in the open transaction, then the values
    before again. They are transaction-local: a failed statement's rollback ends them."""
    before = {}
    for name, value in settings.items():
        cur.execute("SELECT current_setting(%s), set_config(%s, %s, true)", (name, name, value))
        before[name] = cur.fetchone()[0]
    yield
    for name, value in before.items():
        cur.execute("SELECT set_config(%s, %s, true)", (name, value))


@lru_cache(maxsize=256)
def _spliceable(key: str, text: str) -> str:
    """`text` if the parser still finds it one condition (`where`) or one read-only SELECT
    (`query`): checked again where it is spliced, not only when the spec was made, so SQL
    that reached a spec some other way is refused before any statement carries it."""
    if (clean_where if key == "where" else clean_query)(text) != text:
        raise ConfigError(f"`{key}` was not checked; build the spec from the table list")
    return text


def _conditions(spec: TableSpec, extra: tuple[sql.Composable, ...]) -> list[sql.Composable]:
    parts: list[sql.Composable] = []
    if spec.where:
        parts.append(sql.SQL("({})").format(sql.SQL(_spliceable("where", spec.where))))
    if spec.window is not None:
        parts.append(sql.SQL("({})").format(spec.window))
    parts.extend(sql.SQL("({})").format(e) for e in extra)
    return parts


def scope_condition(spec: TableSpec, *extra: sql.Composable) -> sql.Composable:
    """`(where) AND (window) AND (extra...)`, or `true` when there is no condition."""
    parts = _conditions(spec, extra)
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def where_clause(spec: TableSpec, *extra: sql.Composable) -> sql.Composable:
    """` WHERE (where) AND (window) AND (extra...)`, or nothing when there is no condition.

    `where` is the operator's own SQL, checked by `user_sql` to be one expression;
    `window` is the run's time window (composed from identifiers and literals by
    `window.py`); `extra` are the caller's conditions.
    """
    parts = _conditions(spec, extra)
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(parts)) if parts else sql.SQL("")


def source_relation(spec: TableSpec) -> sql.Composable:
    """The source rows before `where`: the table, or the query as a subquery."""
    if spec.query is not None:
        query = _spliceable("query", spec.query)
        return sql.SQL("({}) AS {}").format(sql.SQL(query), sql.Identifier("pg_sync_query"))
    assert spec.source is not None
    return spec.source.ident


def source_scope(
    spec: TableSpec, select_list: sql.Composable, extra: sql.Composable | None = None
) -> sql.Composed:
    """SELECT <select_list> FROM the source scope (table or query, plus `where`), narrowed
    further by the condition `extra` if given."""
    condition = where_clause(spec, extra) if extra is not None else where_clause(spec)
    return sql.SQL("SELECT {} FROM {}{}").format(select_list, source_relation(spec), condition)


def key_in(key: list[Column], arrays: list[sql.Composable]) -> sql.Composed:
    """`(k1, k2) IN (SELECT u.c0::t1, u.c1::t2 FROM unnest(a0::text[], a1::text[]) ...)`.

    `arrays` hold each key column's values as text (rendered under the pinned settings,
    so they cast back exactly). Compared in the key's own type, so the key's index serves.
    """
    names = [sql.Identifier(f"c{i}") for i in range(len(key))]
    return sql.SQL("({}) IN (SELECT {} FROM unnest({}) AS u({}))").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in key),
        sql.SQL(", ").join(
            sql.SQL("u.{}::{}").format(n, c.type_sql) for n, c in zip(names, key, strict=True)
        ),
        sql.SQL(", ").join(sql.SQL("{}::text[]").format(a) for a in arrays),
        sql.SQL(", ").join(names),
    )


def target_scope(spec: TableSpec, select_list: sql.Composable) -> sql.Composed:
    """SELECT <select_list> FROM the target scope: the rows `where` selects there."""
    return sql.SQL("SELECT {} FROM {}{}").format(select_list, spec.target.ident, where_clause(spec))


def estimate_rows(cur, spec: TableSpec) -> int:
    """The planner's row estimate for the source scope (cheap; sizes localization buckets)."""
    cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(source_scope(spec, sql.SQL("1"))))
    row = cur.fetchone()
    if row is None or not isinstance(row[0], list):  # not a plan: the estimate is only a courtesy
        return 0
    return int(row[0][0]["Plan"]["Plan Rows"])
