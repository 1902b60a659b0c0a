"""Operations paths in Dagster: every schedule's tick and the run it requests, reconciles
of every kind of table, and metadata that says exactly what was compared."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from dagster import DagsterInstance, build_schedule_context

from pg_sync_assets.definitions import build_definitions
from pg_sync_assets_tests.integration.test_dagster import _checks, _materialized
from pg_sync_assets_tests.integration.test_dagster_incremental import _run
from pg_sync_assets_tests.support import point_definitions_at

SEED = """
CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz, v text);
INSERT INTO events SELECT i, timestamptz '2026-11-20 00:00+00' + i * interval '61 seconds', 'v' || i
FROM generate_series(1, 600) AS i;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'a'), (2, 'b');
CREATE TABLE log (line text);
INSERT INTO log VALUES ('x'), ('y');
CREATE VIEW customer_names AS SELECT name FROM customers;
CREATE MATERIALIZED VIEW customer_count AS SELECT count(*) AS n FROM customers;
"""

CONFIG = """
tables:
  - source: public.events
    mode: incremental
    incremental_column: updated_at
    partition_start: 2026-11-20-00:00
    lookback: 1
  - source: public.customers
  - source: public.log
  - source: public.customer_names
  - source: public.customer_count
  - name: nightly
    source: public.customers
    target: copies.customers
    schedule: "30 4 * * *"
  - name: events_by_id
    source: public.events
    target: copies.events
    mode: incremental
    incremental_column: id
    lookback_rows: 10
    schedule: "*/15 * * * *"
"""


@pytest.fixture
def project(dbs, tmp_path, monkeypatch):
    return point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)


def test_every_schedule_ticks_and_the_run_it_requests_succeeds(project, dbs):
    defs = build_definitions()
    schedules = defs.get_repository_def().schedule_defs
    assert {s.name for s in schedules} == {
        "sync_daily_schedule", "sync_nightly_schedule", "reconcile_daily", "sync_events_hourly",
        "reconcile_events_daily", "sync_events_by_id_schedule"}
    # first the loads, then the reconciles that compare against them
    for schedule in sorted(schedules, key=lambda s: s.name.startswith("reconcile")):
        tick = schedule.evaluate_tick(build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, 20, 6, 7, tzinfo=timezone.utc)))
        assert len(tick.run_requests) == 1, schedule.name
        request = tick.run_requests[0]
        tags = {k: v for k, v in request.tags.items() if not k.startswith("dagster/partition")}
        result = defs.resolve_job_def(schedule.job_name).execute_in_process(
            run_config=request.run_config, tags=tags, partition_key=request.partition_key,
            instance=DagsterInstance.ephemeral(), raise_on_error=False)
        assert result.success, (schedule.name, [e.message for e in result.all_events if e.is_failure])
        if schedule.name == "sync_events_hourly":
            assert request.partition_key == "2026-11-20-05:00"
    assert dbs.tgt("SELECT count(*) FROM events") == dbs.src("SELECT count(*) FROM events")
    assert dbs.tgt("SELECT count(*) FROM copies.customers") == [(2,)]
    assert dbs.tgt("SELECT count(*) FROM copies.events") == [(600,)]


def test_reconcile_all_handles_keyless_tables_views_and_materialized_views(project, dbs):
    assert _run("sync_all").success
    assert _run("reconcile_all").success  # nothing differs: nothing fails either
    dbs.tgt("UPDATE log SET line = 'tampered' WHERE line = 'x'")

    result = _run("reconcile_all")

    assert result.success
    assert dbs.tgt("SELECT line FROM log ORDER BY 1") == [("x",), ("y",)]
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_failed_checks_advise_the_repair_that_works_for_the_table(project, dbs):
    assert _run("sync_all").success
    assert _run("sync_events", partition_key="2026-11-20-05:00").success
    dbs.tgt("UPDATE log SET line = 'tampered' WHERE line = 'x'; UPDATE customers SET name = 'z'")

    checks = _checks(_run("verify_all"))

    keyless = checks[("log", "checksum")].description
    assert "`public.log` has no key, so the differing rows cannot be named" in keyless
    assert "`dagster asset materialize -m pg_sync_assets.definitions --select log`" in keyless
    assert "reconcile_all" not in keyless
    assert "-j reconcile_events`" in checks[("events", "row_count")].description
    assert "-j reconcile_all` (every table)" in checks[("customers", "checksum")].description


def test_a_lookback_run_says_exactly_which_rows_it_compared(project, dbs):
    result = _run("sync_events", partition_key="2026-11-20-05:00")

    assert result.success
    md = _materialized(result)["events"]
    assert md["partition_window"] == "[2026-11-20T05:00:00+00:00, 2026-11-20T06:00:00+00:00)"
    window = ("[2026-11-20T04:00:00+00:00, 2026-11-20T06:00:00+00:00), the partitions' window plus 1 h "
              "lookback")
    assert md["window"] == window
    compared = dbs.src("SELECT count(*) FROM events WHERE updated_at >= '2026-11-20 04:00+00' "
                       "AND updated_at < '2026-11-20 06:00+00'")[0][0]
    assert md["run_rows_copied"] == compared == md["verified_source_rows"]
    check = _checks(result)[("events", "row_count")]
    assert check.description == f"{compared} rows in source and target (`updated_at` in {window})"


def test_a_range_run_gives_each_partition_only_its_own_figures(project, dbs):
    result = _run("sync_events", tags={"dagster/asset_partition_range_start": "2026-11-20-01:00",
                                       "dagster/asset_partition_range_end": "2026-11-20-03:00"})

    assert result.success
    by_partition = {
        e.step_materialization_data.materialization.partition:
            {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()}
    assert sorted(by_partition) == ["2026-11-20-01:00", "2026-11-20-02:00", "2026-11-20-03:00"]
    for partition, md in by_partition.items():
        for whole_run_figure in ("dagster/row_count", "rows_copied", "rows_inserted", "rows_updated"):
            assert whole_run_figure not in md, (partition, whole_run_figure)
        start = datetime.strptime(partition, "%Y-%m-%d-%H:%M").replace(tzinfo=timezone.utc)
        assert md["dagster/partition_row_count"] == dbs.src(
            "SELECT count(*) FROM events WHERE updated_at >= %(s)s AND updated_at < %(s)s + interval '1 hour'",
            {"s": start})[0][0], partition
        assert md["run_partitions"] == 3
