"""A server lost or refusing mid-run: the error names the table, the stage and which
server, the target is unchanged, and cleanup never hides the cause."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from pg_sync_assets.engine import ConfigError, Mode, SchemaMismatchError, SyncError, TableSpec
from pg_sync_assets_tests.integration.test_failures import (
    FIRST,
    SLOW,
    TARGET,
    _spec,
    _wait_for_sleeping_copy,
    wait_for_first,
)
from pg_sync_assets_tests.support import run_sync, staging_tables, table_text


def _in_background(dbs, spec: TableSpec) -> tuple[threading.Thread, list[BaseException]]:
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            run_sync(dbs, spec)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    return worker, outcome


def test_target_lost_during_merge_names_the_target_and_the_stage(dbs):
    run_sync(dbs, _spec(FIRST))
    before = table_text(dbs.target, TARGET, "id")
    reader = psycopg2.connect(dbs.target)
    try:
        with reader.cursor() as cur:  # holds ACCESS SHARE: the full refresh waits for it
            cur.execute("SELECT count(*) FROM items")
        spec = TableSpec(name="items", target=TARGET, query=FIRST.replace("'v1'", "'v2'"),
                         primary_key=("id",), mode=Mode.FULL_REFRESH)
        worker, outcome = _in_background(dbs, spec)
        pid = wait_for_first(lambda: dbs.tgt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_sync_assets' "
            "AND wait_event_type = 'Lock'"))
        dbs.tgt("SELECT pg_terminate_backend(%s)", (pid,))
        worker.join(timeout=30)
    finally:
        reader.close()
    assert len(outcome) == 1 and type(outcome[0]) is SyncError, outcome
    message = str(outcome[0])
    assert message.startswith("merge failed for `public.items`: the target server closed the connection (")
    assert message.endswith("the target table is unchanged")
    assert table_text(dbs.target, TARGET, "id") == before


def test_target_lost_during_copy_names_the_target_and_the_copy(dbs):
    run_sync(dbs, _spec(FIRST))
    before = table_text(dbs.target, TARGET, "id")
    # The target only notices its loss when the source sends more rows: sleep briefly.
    worker, outcome = _in_background(dbs, _spec(SLOW.replace("nap(30)", "nap(2)")))
    _wait_for_sleeping_copy(dbs)
    pid = wait_for_first(lambda: dbs.tgt(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_sync_assets' "
        "AND query LIKE 'COPY%%'"))
    dbs.tgt("SELECT pg_terminate_backend(%s)", (pid,))
    worker.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], SyncError), outcome
    message = str(outcome[0])
    assert message.startswith("copy failed for `public.items`: the target server closed the connection")
    assert table_text(dbs.target, TARGET, "id") == before


def test_source_lost_during_copy_names_the_source(dbs):
    run_sync(dbs, _spec(FIRST))
    worker, outcome = _in_background(dbs, _spec(SLOW))
    dbs.src("SELECT pg_terminate_backend(%s)", (_wait_for_sleeping_copy(dbs),))
    worker.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], SyncError), outcome
    assert str(outcome[0]).startswith(
        "copy failed for `public.items`: the source server closed the connection (")
    assert staging_tables(dbs.target) == []


def test_a_source_statement_timeout_names_the_source_server(dbs):
    dbs.src("CREATE ROLE slow_reader LOGIN; GRANT pg_read_all_data TO slow_reader; "
            "ALTER ROLE slow_reader SET statement_timeout = '300ms'")
    try:
        from psycopg2.extensions import make_dsn

        from pg_sync_assets.engine import connect, sync_table
        source = connect(make_dsn(dbs.source, user="slow_reader"), readonly=True, role="source")
        target = connect(dbs.target, readonly=False, role="target")
        try:
            with pytest.raises(SyncError) as caught:
                sync_table(_spec(SLOW), source, target)
        finally:
            source.close()
            target.close()
    finally:
        dbs.src("DROP OWNED BY slow_reader; DROP ROLE slow_reader")
    message = str(caught.value)
    assert message.startswith("copy failed for `public.items` on the source server: ERROR:  canceling "
                              "statement due to statement timeout")
    assert "statement_timeout" in message and message.endswith("the target table is unchanged")


def test_a_schema_mismatch_names_its_stage(dbs):
    dbs.src("CREATE TABLE items (id int PRIMARY KEY, v text)")
    dbs.tgt("CREATE TABLE items (id int PRIMARY KEY, v int)")
    spec = TableSpec(name="items", target=TARGET, source=TARGET)
    with pytest.raises(SchemaMismatchError) as caught:
        run_sync(dbs, spec)
    assert str(caught.value).startswith("plan failed for `public.items`: target table `public.items` "
                                        "does not match the source")


def test_a_where_forced_past_the_parser_still_writes_nothing_to_the_source(dbs):
    dbs.src("CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a');"
            "CREATE TABLE written (n int)")
    spec = TableSpec(name="items", target=TARGET, source=TARGET)
    object.__setattr__(spec, "where", "true); COMMIT; BEGIN READ WRITE; INSERT INTO written VALUES (1); "
                                      "SELECT 1 FROM items WHERE (true")
    # The parser runs again wherever the SQL is spliced: no statement ever carries it.
    with pytest.raises(ConfigError, match="`where` holds a `;`"):
        run_sync(dbs, spec)
    assert dbs.src("SELECT count(*) FROM written") == [(0,)]
    assert dbs.tgt("SELECT to_regclass('public.items')") == [(None,)]


def test_the_tripwire_refuses_a_source_transaction_that_turned_writable(dbs):
    from pg_sync_assets.engine import connect
    from pg_sync_assets.engine.run.context import require_read_only_source

    dbs.src("CREATE TABLE written (n int)")
    source = connect(dbs.source, readonly=True, role="source")
    try:
        with source.cursor() as cur:
            require_read_only_source(cur, "public.items")  # a fresh read-only transaction passes
            cur.execute("COMMIT; BEGIN READ WRITE; INSERT INTO written VALUES (1)")
            with pytest.raises(SyncError) as caught:
                require_read_only_source(cur, "public.items")
    finally:
        source.close()
    assert str(caught.value).startswith("verify failed for `public.items` on the source server: the "
                                        "source session left its read-only transaction")
    assert dbs.src("SELECT count(*) FROM written") == [(0,)]
