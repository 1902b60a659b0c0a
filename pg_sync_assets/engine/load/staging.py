"""Staging tables in the target database.

A staging table is an UNLOGGED table in the `sync_staging` schema, committed so any
session can see (and later, parallel loaders can fill) it. Its name carries a hash of
the target table, so names stay within PostgreSQL's 63 bytes whatever the table name
(Korean names take three bytes a character), and a run token. A run drops its own
staging table on success and on failure; a process killed outright leaves one behind,
which the next run of the same table drops: it holds the table's advisory lock
(`locks.py`), so no other live run can own a staging table of that target.
"""

from __future__ import annotations

import hashlib
import secrets

import psycopg2
from psycopg2 import sql

from ..plan.introspect import Column
from ..plan.spec import TableRef

STAGING_SCHEMA = "sync_staging"


def target_hash(table: TableRef) -> str:
    return hashlib.sha256(f"{table.schema}\x00{table.name}".encode()).hexdigest()[:12]


def staging_prefix(table: TableRef) -> str:
    return f"stg_{target_hash(table)}_"


def new_staging_name(table: TableRef) -> str:
    return staging_prefix(table) + secrets.token_hex(4)


# What the loser of two concurrent `CREATE ... IF NOT EXISTS` gets once the winner
# commits: the catalog's unique index, or the "already exists" check, depending on timing.
CREATE_RACES = (
    psycopg2.errors.UniqueViolation,
    psycopg2.errors.DuplicateObject,
    psycopg2.errors.DuplicateSchema,
    psycopg2.errors.DuplicateTable,
)


def create_if_missing(cur, statement: sql.Composable) -> None:
    """A `CREATE ... IF NOT EXISTS` that first runs of several tables may race on
    (autocommit): losing the race means the other run made it."""
    try:
        cur.execute(statement)
    except CREATE_RACES:
        cur.connection.rollback()


def ensure_staging_schema(cur) -> None:
    create_if_missing(cur, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STAGING_SCHEMA)))


def drop_orphaned_staging(cur, table: TableRef) -> list[str]:
    """Drop staging tables of `table` left by killed runs; call with the lock held."""
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND starts_with(c.relname, %s) AND c.relkind = 'r'",
        (STAGING_SCHEMA, staging_prefix(table)),
    )
    names = [r[0] for r in cur.fetchall()]
    for name in names:
        drop_staging(cur, name)
    return names


def staging_column_type(col: Column) -> sql.Composable:
    """User-defined types travel as text; built-in types keep their own type."""
    return sql.SQL("text") if col.travels_as_text else col.type_sql


def create_staging(cur, table: TableRef, name: str, columns: list[Column]) -> None:
    cur.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
            sql.Identifier(STAGING_SCHEMA, name),
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), staging_column_type(c)) for c in columns
            ),
        )
    )
    cur.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            sql.Identifier(STAGING_SCHEMA, name), sql.Literal(f"pg_sync_assets staging for {table}")
        )
    )


def drop_run_tables(cur, staging: str) -> None:
    """Drop a run's staging table and the tables named after it (its differing keys, a
    cdc run's changes)."""
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND starts_with(c.relname, %s) AND c.relkind = 'r'",
        (STAGING_SCHEMA, staging),
    )
    for (name,) in cur.fetchall():
        drop_staging(cur, name)


def drop_staging(cur, name: str) -> None:
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STAGING_SCHEMA, name)))
