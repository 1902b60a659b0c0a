"""Create a missing target table (comparing an existing one with the source, and
evolving it, is `evolve.py`).

Creation happens inside the final transaction, so a failed run leaves no empty table
behind. Enums are recreated in the target with the source's labels (values keep their
exact text); domains were already resolved to their base type by `introspect`; other
user-defined types must exist in the target under the same name.
"""

from __future__ import annotations

from psycopg2 import sql

from ..errors import SchemaMismatchError
from ..plan.introspect import Column
from ..plan.spec import TableRef

CREATE_LOCK = "pg_sync_assets:create target"


def _ensure_user_types(cur, table: TableRef, columns: list[Column]) -> None:
    for col in columns:
        if col.user_type is None:
            continue
        schema, name = col.user_type
        cur.execute(
            "SELECT t.oid, COALESCE((SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) "
            "FROM pg_enum e WHERE e.enumtypid = t.oid), '{}') "
            "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = %s AND t.typname = %s",
            (schema, name),
        )
        row = cur.fetchone()
        if row is None and col.enum_labels:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cur.execute(
                sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
                    sql.Identifier(schema, name),
                    sql.SQL(", ").join(sql.Literal(label) for label in col.enum_labels),
                )
            )
        elif row is None:
            raise SchemaMismatchError(
                f"column `{col.name}` of `{table}` has type {schema}.{name}, which the target "
                "database does not have; create that type (or its extension) in the target, "
                "or cast the column to a built-in type in a `query`"
            )
        elif col.enum_labels and not set(col.enum_labels) <= set(row[1]):
            missing = [label for label in col.enum_labels if label not in row[1]]
            raise SchemaMismatchError(
                f"enum {schema}.{name} in the target lacks the label(s) {missing} used by "
                f"column `{col.name}` of `{table}`; ALTER TYPE ... ADD VALUE them in the target"
            )


def ensure_namespace(cur, table: TableRef, columns: list[Column]) -> None:
    """CREATE SCHEMA/TYPE for a missing target, in the caller's transaction."""
    # Runs of different tables in parallel (one process per step) may create the same
    # schema or enum at once: the second CREATE would fail on the catalog's unique index
    # when the first commits. Creating them is serialized per target database; the lock
    # ends with the caller's transaction, and only first runs take it.
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (CREATE_LOCK,))
    _ensure_user_types(cur, table, columns)
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema)))


def create_target_table(
    cur,
    table: TableRef,
    columns: list[Column],
    key: tuple[str, ...],
    index_on: str | None = None,
    with_key: bool = True,
) -> None:
    """CREATE SCHEMA/TYPE/TABLE for a missing target: same names, types, NOT NULLs, key;
    plus an index on `index_on` (an incremental table's cursor, which every window's
    verification and count filters on). `with_key=False` leaves the key and the index
    to `add_key_and_cursor_index` (a first load builds them once, after its rows), and
    the schema and types to `ensure_namespace`, committed before."""
    if with_key:
        ensure_namespace(cur, table, columns)
    parts: list[sql.Composable] = []
    for col in columns:
        part = sql.SQL("{} {}").format(sql.Identifier(col.name), col.type_sql)
        if col.generated_expr is not None:
            # The expression text comes from the source's own catalog (pg_get_expr).
            part = sql.SQL("{} GENERATED ALWAYS AS ({}) STORED").format(part, sql.SQL(col.generated_expr))
        if col.not_null or col.name in key:
            part = sql.SQL("{} NOT NULL").format(part)
        parts.append(part)
    if key and with_key:
        parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key)))
    cur.execute(sql.SQL("CREATE TABLE {} ({})").format(table.ident, sql.SQL(", ").join(parts)))
    if with_key:
        add_key_and_cursor_index(cur, table, (), index_on)


def add_key_and_cursor_index(cur, table: TableRef, key: tuple[str, ...], index_on: str | None) -> None:
    """The primary key on `key` (if any) and an index on `index_on` (if any)."""
    if key:
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                table.ident, sql.SQL(", ").join(sql.Identifier(k) for k in key)
            )
        )
    if index_on is not None:
        cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(table.ident, sql.Identifier(index_on)))
