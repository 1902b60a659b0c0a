"""What happens when things go wrong: the target stays as it was and nothing is left behind."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from pg_sync_assets.engine import (
    ConfigError,
    ConnectionFailed,
    LockTimeoutError,
    Mode,
    SchemaMismatchError,
    SyncError,
    TableRef,
    TableSpec,
    connect,
    sync_table,
)
from pg_sync_assets.engine.load.staging import ensure_staging_schema
from pg_sync_assets.engine.verify.record import ensure_record_table
from pg_sync_assets.resources import PostgresResource
from pg_sync_assets_tests.conftest import dbname
from pg_sync_assets_tests.support import exception_chain_text, run_sync, sessions, staging_tables, table_text

TARGET = TableRef("public", "items")
FIRST = "SELECT i AS id, 'v1' AS v FROM generate_series(1, 5000) AS i"
# Streams 2,000 rows, then sleeps inside the COPY (so a test can kill it midway).
SLOW = ("SELECT i AS id, CASE WHEN i = 2000 THEN nap(30) || 'v2' ELSE 'v2' END AS v "
        "FROM generate_series(1, 5000) AS i")


def _spec(query: str) -> TableSpec:
    # The full copy: these tests break a run in the middle of a long copy.
    return TableSpec(name="items", target=TARGET, query=query, primary_key=("id",), mode=Mode.MERGE,
                     differential="never")


def wait_for_first(query, timeout: float = 20.0):
    """The first column of `query()`'s first row, once it returns one (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query()
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("the awaited state was never reached")


def _wait_for_sleeping_copy(dbs, timeout: float = 20.0) -> int:
    """pid of the source backend once the slow COPY sleeps midway."""
    return wait_for_first(lambda: dbs.src(
        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE 'COPY%%'"), timeout)


def test_source_killed_midway_leaves_target_unchanged_and_no_staging(dbs):
    run_sync(dbs, _spec(FIRST))
    before = table_text(dbs.target, TARGET, "id")
    outcome: list[BaseException] = []

    def sync_slowly() -> None:
        try:
            run_sync(dbs, _spec(SLOW))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=sync_slowly)
    worker.start()
    pid = _wait_for_sleeping_copy(dbs)
    assert len(staging_tables(dbs.target)) == 1
    assert dbs.src("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)) == [
        ("pg_sync_assets",)]
    assert dbs.tgt("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_sync_assets' "
                   "AND query LIKE 'COPY%%'") == [(1,)]
    dbs.src("SELECT pg_terminate_backend(%s)", (pid,))
    worker.join(timeout=30)

    assert outcome and isinstance(outcome[0], SyncError)
    assert str(outcome[0]).startswith("copy failed for `public.items`: the source server closed the connection")
    assert "the target table is unchanged" in str(outcome[0])
    assert table_text(dbs.target, TARGET, "id") == before
    assert staging_tables(dbs.target) == []


SYNC_IN_CHILD = """
import sys
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table
spec = TableSpec(name="items", target=TableRef("public", "items"), query=sys.argv[3],
                 primary_key=("id",), mode=Mode.MERGE, differential="never")
sync_table(spec, connect(sys.argv[1], readonly=True), connect(sys.argv[2], readonly=False))
"""


def test_staging_left_by_a_killed_process_is_removed_by_the_next_run(dbs):
    run_sync(dbs, _spec(FIRST))
    before = table_text(dbs.target, TARGET, "id")
    child = subprocess.Popen([sys.executable, "-c", SYNC_IN_CHILD, dbs.source, dbs.target, SLOW])
    try:
        _wait_for_sleeping_copy(dbs)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    orphans = staging_tables(dbs.target)
    assert len(orphans) == 1
    assert table_text(dbs.target, TARGET, "id") == before

    result = run_sync(dbs, _spec(FIRST.replace("'v1'", "'v3'")))

    assert result.removed_orphans == tuple(orphans)
    assert staging_tables(dbs.target) == []
    assert dbs.tgt("SELECT DISTINCT v FROM items") == [("v3",)]


def test_existing_target_with_other_columns_is_rejected_and_left_alone(dbs):
    dbs.src("CREATE TABLE items (id int PRIMARY KEY, price numeric(10,2), name text); "
            "INSERT INTO items VALUES (1, 9.99, 'a')")
    dbs.tgt("CREATE TABLE items (id int PRIMARY KEY, price text, label text); "
            "INSERT INTO items VALUES (7, 'x', 'keep me')")
    spec = TableSpec(name="items", target=TARGET, source=TARGET, mode=Mode.FULL_REFRESH)

    with pytest.raises(SchemaMismatchError) as caught:
        run_sync(dbs, spec)

    message = str(caught.value)
    assert "target table `public.items` does not match the source" in message
    assert "column `price` is numeric(10,2) in the source but text in the target" in message
    assert "column `name` (text) is missing in the target" in message
    assert "nothing was written" in message
    assert dbs.tgt("SELECT id, price, label FROM items") == [(7, "x", "keep me")]
    assert staging_tables(dbs.target) == []


def test_a_run_waits_for_the_table_lock_then_gives_up_with_a_clear_error(dbs):
    run_sync(dbs, _spec(FIRST))
    holder = psycopg2.connect(dbs.target)
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtextextended('pg_sync_assets:public.items', 0))")
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught:
            run_sync(dbs, replace(_spec(FIRST), lock_timeout=0.5))
        assert time.monotonic() - started >= 0.5
        assert ("lock failed for `public.items` on the target server: another run has been writing this "
                "table for more than `lock_timeout` (0.5 s)") in str(caught.value)
    finally:
        holder.close()
    assert run_sync(dbs, _spec(FIRST)).rows_copied == 5000


def test_connection_errors_never_show_the_password():
    url = "postgresql://loader:s3cret-Pa55@127.0.0.1:1/warehouse"
    with pytest.raises(ConnectionFailed) as caught:
        connect(url, readonly=True, role="source")
    assert "s3cret-Pa55" not in exception_chain_text(caught.value)
    assert "loader@127.0.0.1:1/warehouse" in str(caught.value)

    resource = PostgresResource(host="127.0.0.1", port=1, user="loader", password="s3cret-Pa55",
                                dbname="warehouse", role="target")
    with pytest.raises(ConnectionFailed) as caught, resource.get_connection("test"):
        pass
    assert "s3cret-Pa55" not in exception_chain_text(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_a_server_older_than_the_checksum_needs_is_refused_by_name(dbs, monkeypatch):
    # The test servers are new enough: raise the bar above them to see the refusal.
    monkeypatch.setattr(importlib.import_module("pg_sync_assets.engine.connect"), "MIN_SERVER_VERSION", 990000)
    with pytest.raises(ConnectionFailed) as caught:
        connect(dbs.source, readonly=True, role="source")
    running = dbs.src("SELECT current_setting('server_version_num')::int / 10000")[0][0]
    assert "the source database postgres@127.0.0.1:" in str(caught.value)
    assert f"runs PostgreSQL {running}; pg_sync_assets needs 99 or later" in str(caught.value)


def test_source_sessions_are_read_only(dbs):
    dbs.src("CREATE TABLE t (id int)")
    conn = connect(dbs.source, readonly=True, role="source")
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("INSERT INTO t VALUES (1)")
        conn.rollback()
        conn.autocommit = True
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()


def test_missing_grants_fail_with_advice_on_what_to_grant(dbs):
    dbs.src("CREATE TABLE secret (id int PRIMARY KEY); INSERT INTO secret VALUES (1); "
            "DO $$ BEGIN CREATE ROLE no_grants LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    spec = TableSpec(name="secret", target=TableRef("public", "secret"),
                     source=TableRef("public", "secret"))
    source = connect(make_dsn(dbs.source, user="no_grants"), readonly=True)
    target = connect(dbs.target, readonly=False)
    try:
        with pytest.raises(ConfigError) as caught:
            sync_table(spec, source, target)
    finally:
        source.close()
        target.close()
        dbs.src("DROP ROLE no_grants")
    message = str(caught.value)
    assert message.startswith("plan failed for `public.secret`: table entry `secret`: the source role "
                              "`no_grants` may not read column(s) ['id'] of `public.secret`; grant it "
                              "SELECT on the table or on those columns")
    assert dbs.tgt("SELECT to_regclass('public.secret')") == [(None,)]
    assert staging_tables(dbs.target) == []


def test_a_session_holding_the_final_table_makes_the_merge_time_out_cleanly(dbs):
    run_sync(dbs, _spec(FIRST))
    before = table_text(dbs.target, TARGET, "id")
    reader = psycopg2.connect(dbs.target)
    try:
        with reader.cursor() as cur:  # an open transaction that read the table holds ACCESS SHARE
            cur.execute("SELECT count(*) FROM items")
        spec = TableSpec(name="items", target=TARGET, query=FIRST.replace("'v1'", "'v2'"),
                         primary_key=("id",), mode=Mode.FULL_REFRESH, lock_timeout=1.0,
                         lock_attempt_timeout=0.2)
        with pytest.raises(LockTimeoutError) as caught:
            run_sync(dbs, spec)
        reader_pid = reader.get_backend_pid()
    finally:
        reader.close()
    message = str(caught.value)
    assert message.startswith(
        "merge failed for `public.items` on the target server: could not lock the table (ACCESS EXCLUSIVE) "
        "within `lock_timeout` (1 s, ")
    assert "tries of at most `lock_attempt_timeout` 0.2 s" in message
    assert f"held by pid {reader_pid} (" in message and "idle in transaction" in message
    assert "raise `lock_timeout` (seconds) for this table in the table list" in message
    assert table_text(dbs.target, TARGET, "id") == before
    assert staging_tables(dbs.target) == []


def test_first_runs_racing_to_create_the_staging_schema_and_record_table_all_go_on(dbs):
    """Eight sessions create them at the same instant, five times: whichever way a loser
    learns it lost ("already exists", or the catalog's unique index), it carries on."""
    for _ in range(40):
        dbs.tgt("DROP SCHEMA IF EXISTS sync_staging CASCADE")
        start, errors = threading.Barrier(8), []

        def create() -> None:
            conn = psycopg2.connect(dbs.target)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    start.wait()
                    ensure_staging_schema(cur)
                    ensure_record_table(cur)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)
            finally:
                conn.close()

        workers = [threading.Thread(target=create) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert errors == []
        assert dbs.tgt("SELECT to_regclass('sync_staging.verified_tables') IS NOT NULL") == [(True,)]


def test_first_runs_of_several_tables_in_parallel_create_one_schema_and_enum(dbs):
    """Steps run in parallel processes; their first runs all create `analytics` and the enum."""
    dbs.src("CREATE TYPE mood AS ENUM ('ok', 'sad'); " + "; ".join(
        f"CREATE TABLE t{i} (id int PRIMARY KEY, m mood); INSERT INTO t{i} VALUES (1, 'ok')" for i in range(6)))
    specs = [TableSpec(name=f"t{i}", target=TableRef("analytics", f"t{i}"), source=TableRef("public", f"t{i}"))
             for i in range(6)]
    errors: list[BaseException] = []

    def sync(spec: TableSpec) -> None:
        try:
            run_sync(dbs, spec)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    workers = [threading.Thread(target=sync, args=(spec,)) for spec in specs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    assert dbs.tgt("SELECT count(*) FROM pg_tables WHERE schemaname = 'analytics'") == [(6,)]


def test_a_lock_holder_of_another_role_is_named_by_role_not_by_zeros(dbs):
    """Without pg_read_all_stats, pg_stat_activity hides another role's application,
    state and start: the message says so and names the role and the lock."""
    role = f"loader_{uuid.uuid4().hex[:8]}"
    dbs.tgt(sql.SQL("CREATE ROLE {r} LOGIN; GRANT CREATE ON DATABASE {d} TO {r}; GRANT CREATE ON SCHEMA public TO {r}")
            .format(r=sql.Identifier(role), d=sql.Identifier(dbname(dbs.target))))
    as_loader = make_dsn(dbs.target, user=role)
    spec = TableSpec(name="items", target=TARGET, query=FIRST, primary_key=("id",), mode=Mode.FULL_REFRESH,
                     lock_timeout=1.0, lock_attempt_timeout=0.2, differential="never")
    try:
        with sessions(dbs) as (source, _):
            target = connect(as_loader, readonly=False, role="target")
            try:
                sync_table(spec, source, target)
                reader = psycopg2.connect(dbs.target)  # the superuser's report
                try:
                    with reader.cursor() as cur:
                        cur.execute("SELECT count(*) FROM items")
                    with pytest.raises(LockTimeoutError) as caught:
                        sync_table(spec, source, target)
                    reader_pid = reader.get_backend_pid()
                finally:
                    reader.close()
            finally:
                target.close()
    finally:
        dbs.tgt(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        dbs.tgt(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    message = str(caught.value)
    assert (f"held by pid {reader_pid} (role postgres, AccessShareLock; its application, state and age "
            "are hidden from this role: grant it pg_read_all_stats to see them)") in message
    assert "?" not in message and "open 0 s" not in message


def test_ctrl_c_during_the_copy_is_reported_as_an_interrupt_not_a_cancelled_statement(dbs):
    run_sync(dbs, _spec(FIRST))
    before = table_text(dbs.target, TARGET, "id")
    child = subprocess.Popen([sys.executable, "-c", SYNC_IN_CHILD, dbs.source, dbs.target, SLOW],
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_sleeping_copy(dbs)
        os.kill(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=20)  # the source's 30 s sleep is cancelled
    finally:
        if child.poll() is None:
            child.kill()
    last = stderr.strip().splitlines()[-1]
    assert last == "KeyboardInterrupt", stderr
    assert "cancel" not in stderr.lower(), stderr
    assert table_text(dbs.target, TARGET, "id") == before
    assert staging_tables(dbs.target) == []


def test_check_and_the_plan_refuse_a_source_role_that_cannot_read_a_copied_column(dbs):
    role = f"reader_{uuid.uuid4().hex[:8]}"
    dbs.src(sql.SQL("CREATE TABLE people (id int PRIMARY KEY, name text, ssn text); "
                    "INSERT INTO people VALUES (1, 'a', '123'); CREATE ROLE {r} LOGIN; "
                    "GRANT SELECT (id, name) ON people TO {r}").format(r=sql.Identifier(role)))
    people = TableRef("public", "people")
    try:
        source = connect(make_dsn(dbs.source, user=role), readonly=True)
        try:
            with sessions(dbs) as (_, target), pytest.raises(ConfigError) as caught:
                sync_table(TableSpec(name="people", source=people, target=people), source, target)
            assert (f"table entry `people`: the source role `{role}` may not read column(s) ['ssn'] of "
                    "`public.people`; grant it SELECT on the table or on those columns") in str(caught.value)
            assert "`columns: {exclude: [...]}`" in str(caught.value)
            with sessions(dbs) as (_, target):
                result = sync_table(TableSpec(name="people", source=people, target=people,
                                              columns_exclude=("ssn",)), source, target)
            assert result.target_rows == 1
        finally:
            source.close()
    finally:
        dbs.src(sql.SQL("DROP TABLE people; DROP ROLE {}").format(sql.Identifier(role)))
