"""Shared fixtures: two real PostgreSQL servers (source and target) for the session,
and a fresh pair of databases per test, dropped afterwards.

Set PG_SYNC_TEST_SOURCE_URL and PG_SYNC_TEST_TARGET_URL (superuser or CREATEDB role) to
use servers of your own; otherwise throwaway servers are started in temporary
directories (see `pg_sync_assets.local.servers`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from pg_sync_assets.local.servers import start_server

FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# Source servers decode their WAL for `mode: cdc` tables (logical replication). Commits
# wait for their WAL flush (cheap with fsync off): a `cdc` run reads up to the flushed
# position, so a test's change is in the next run, not in one a moment later.
SOURCE_SETTINGS = {
    **FAST_SETTINGS,
    "synchronous_commit": "on",
    "wal_level": "logical",
    "max_replication_slots": "64",
    "max_wal_senders": "64",
}

# Importing pg_sync_assets.definitions builds `defs` from these: a developer's own
# settings must not leak into the tests (each test that needs them sets its own).
for _var in ("PG_SYNC_SOURCE_URL", "PG_SYNC_TARGET_URL", "PG_SYNC_CONFIG", "PG_SYNC_DEMO_DIR"):
    os.environ.pop(_var, None)


@dataclass(frozen=True)
class ServerPair:
    source_url: str
    target_url: str


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerPair]:
    given_source = os.environ.get("PG_SYNC_TEST_SOURCE_URL")
    given_target = os.environ.get("PG_SYNC_TEST_TARGET_URL")
    if given_source and given_target:
        yield ServerPair(given_source, given_target)
        return
    source = start_server("source", SOURCE_SETTINGS)
    try:
        target = start_server("target", FAST_SETTINGS)
        try:
            yield ServerPair(source.url(), target.url())
        finally:
            target.stop()
    finally:
        source.stop()


def execute(url: str, statement, params=None) -> list[tuple]:
    """Run one statement in autocommit mode; return its rows (if any)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _database_url(server_url: str, dbname: str) -> str:
    return make_dsn(server_url, dbname=dbname)


@dataclass(frozen=True)
class DatabasePair:
    source: str
    target: str

    def src(self, statement, params=None) -> list[tuple]:
        return execute(self.source, statement, params)

    def tgt(self, statement, params=None) -> list[tuple]:
        return execute(self.target, statement, params)


# The table list's SQL may not call volatile functions (`engine/plan/side_effects.py`), so a
# test that slows a run down from inside a `where` or `query` calls this one, which is
# declared STABLE; every test database has it.
NAP = "CREATE FUNCTION nap(float8) RETURNS text LANGUAGE sql STABLE AS 'SELECT pg_sleep($1)::text'"


@pytest.fixture
def dbs(servers: ServerPair) -> Iterator[DatabasePair]:
    token = uuid.uuid4().hex[:10]
    names = (f"src_{token}", f"tgt_{token}")
    for url, name in zip((servers.source_url, servers.target_url), names, strict=False):
        execute(url, sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(name)))
    try:
        pair = DatabasePair(_database_url(servers.source_url, names[0]),
                            _database_url(servers.target_url, names[1]))
        pair.src(NAP)
        pair.tgt(NAP)
        yield pair
    finally:
        # A database with a replication slot cannot be dropped: a `cdc` test's slots go first.
        execute(
            servers.source_url,
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE database = %s AND active_pid IS NOT NULL",
            (names[0],),
        )
        execute(
            servers.source_url,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
            (names[0],),
        )
        for url, name in zip((servers.source_url, servers.target_url), names, strict=False):
            execute(url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dbname(url: str) -> str:
    return parse_dsn(url)["dbname"]


@pytest.fixture
def instance_db(servers: ServerPair) -> Iterator[str]:
    """A database for a Dagster instance on the target server, dropped afterwards."""
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    execute(servers.target_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        execute(servers.target_url, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
