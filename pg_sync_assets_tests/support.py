"""Helpers for tests: run the engine on a database pair, read a table back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from psycopg2 import sql

from pg_sync_assets.engine import (
    SyncOptions,
    SyncResult,
    TableRef,
    TableSpec,
    connect,
    reconcile_table,
    sync_table,
)
from pg_sync_assets.engine.compare.localize import Difference, localize_table
from pg_sync_assets.engine.sql import pin_text_settings
from pg_sync_assets.engine.verify.verify import TableComparison, compare_table


class Writer:
    """A thread running one statement over and over; `count` is how many times it ran."""

    def __init__(self, run_sql: Callable, statement: str, params: Callable[[int], tuple], start: int) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, args=(run_sql, statement, params, start))

    def _write(self, run_sql: Callable, statement: str, params: Callable[[int], tuple], n: int) -> None:
        while not self._stop.is_set():
            n += 1
            run_sql(statement, params(n))
            self.count += 1

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def writing_meanwhile(run_sql: Callable, statement: str, params: Callable[[int], tuple], start: int = 0):
    """Run `statement` with `params(n)` for n = start + 1, start + 2, ... in a thread
    until the block ends (a busy source during a sync); yields the Writer."""
    writer = Writer(run_sql, statement, params, start)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()


@contextmanager
def sessions(dbs, target_readonly: bool = False, source_url: str | None = None) -> Iterator[tuple]:
    """(source, target) engine sessions on a database pair (the source as another role
    with `source_url`), closed afterwards."""
    source = connect(source_url or dbs.source, readonly=True, role="source")
    target = connect(dbs.target, readonly=target_readonly, role="target")
    try:
        yield source, target
    finally:
        source.close()
        target.close()


def run_sync(dbs, spec: TableSpec, options: SyncOptions | None = None) -> SyncResult:
    with sessions(dbs) as (source, target):
        return sync_table(spec, source, target, options=options or SyncOptions())


def run_reconcile(dbs, spec: TableSpec) -> SyncResult:
    with sessions(dbs) as (source, target):
        return reconcile_table(spec, source, target)


def compare(dbs, spec: TableSpec) -> TableComparison:
    with sessions(dbs, target_readonly=True) as (source, target):
        return compare_table(spec, source, target)


def localize(dbs, spec: TableSpec, rows_hint: int = 1000, limit: int = 100) -> Difference:
    with sessions(dbs, target_readonly=True) as (source, target):
        return localize_table(spec, source, target, rows_hint, limit)


def table_text(url: str, table: TableRef, order_by: str, where: str = "true") -> list[str]:
    """Every row of `table` (or those `where` selects) rendered as text under pinned
    settings, ordered. The alias is one no test table has as a column: `t::text` with a
    column `t` would render that column instead of the row."""
    from psycopg2 import connect as raw_connect

    conn = raw_connect(url)
    try:
        with conn.cursor() as cur:
            pin_text_settings(cur)
            cur.execute(sql.SQL('SELECT ROW("row of".*)::text FROM {} AS "row of" WHERE {} ORDER BY {}').format(
                table.ident, sql.SQL(where), sql.Identifier(order_by)))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def staging_tables(url: str) -> list[str]:
    """The staging tables in sync_staging (not the record table, `verified_tables`)."""
    from pg_sync_assets_tests.conftest import execute

    return [r[0] for r in execute(
        url, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE n.nspname = 'sync_staging' AND c.relkind = 'r' AND c.relname <> 'verified_tables'")]


def point_definitions_at(dbs, tmp_path, monkeypatch, seed: str, config: str):
    """Seed the source, write a table list, and point PG_SYNC_* at them; the list's path."""
    dbs.src(seed)
    path = tmp_path / "tables.yaml"
    path.write_text(config, encoding="utf-8")
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", dbs.source)
    monkeypatch.setenv("PG_SYNC_TARGET_URL", dbs.target)
    monkeypatch.setenv("PG_SYNC_CONFIG", str(path))
    return path


def exception_chain_text(exc: BaseException | None) -> str:
    """repr and str of an exception and everything chained to it (cause and context)."""
    texts = []
    while exc is not None:
        texts.append(f"{exc!r} {exc}")
        exc = exc.__cause__ or exc.__context__
    return " ".join(texts)


def instance_yaml(form: str, server_url: str, dbname: str) -> str:
    """A dagster.yaml keeping the instance in `dbname` on the server of `server_url`, in
    one of the two documented forms (`postgres_db` fields, or `postgres_url`)."""
    from psycopg2.extensions import parse_dsn

    p = parse_dsn(server_url)
    if form == "postgres_db":
        return (
            "telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_db:\n"
            f"      hostname: {p['host']}\n      port: {p['port']}\n      username: {p['user']}\n"
            f"      db_name: {dbname}\n"
        )
    return (
        "telemetry:\n  enabled: false\nstorage:\n  postgres:\n"
        f"    postgres_url: postgresql://{p['user']}@{p['host']}:{p['port']}/{dbname}\n"
    )
