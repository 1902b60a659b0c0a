"""Incremental tables in Dagster: partitions, one-pass ranges, schedules, NULL cursors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from dagster import DagsterInstance, DefaultScheduleStatus, build_schedule_context

from pg_sync_assets.definitions import build_definitions
from pg_sync_assets_tests.integration.test_dagster import _checks, _dagster_cli, _materialized
from pg_sync_assets_tests.support import point_definitions_at

SEED = """
CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz, v text);
CREATE INDEX ON events (updated_at);
INSERT INTO events SELECT i, timestamptz '2026-11-20 00:00+00' + i * interval '61 seconds', 'v' || i
FROM generate_series(1, 1500) AS i;
INSERT INTO events VALUES (9001, NULL, 'no cursor'), (9002, '2026-11-20 05:59:59.999999+00', 'edge');
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'a'), (2, 'b');
"""

CONFIG = """
schedules:
  minute_of_hour: 7
tables:
  - source: public.events
    mode: incremental
    incremental_column: updated_at
    partition_start: 2026-11-20-00:00
  - source: public.customers
  - name: nightly
    source: public.customers
    target: copies.customers
    schedule: "30 4 * * *"
"""

RANGE_TAGS = {"dagster/asset_partition_range_start": "2026-11-20-00:00",
              "dagster/asset_partition_range_end": "2026-11-20-23:00"}


@pytest.fixture
def project(dbs, tmp_path, monkeypatch):
    return point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)


def _run(job: str, **kw):
    return build_definitions().resolve_job_def(job).execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False, **kw)


def _source_count(dbs, start: str, end: str) -> int:
    query = "SELECT count(*) FROM events WHERE updated_at >= %s AND updated_at < %s"
    return dbs.src(query, (start, end))[0][0]


def test_one_partition_loads_exactly_its_hour_and_checks_it(project, dbs):
    result = _run("sync_events", partition_key="2026-11-20-05:00")

    assert result.success
    expected = _source_count(dbs, "2026-11-20 05:00+00", "2026-11-20 06:00+00")
    assert dbs.tgt("SELECT count(*), min(updated_at) >= '2026-11-20 05:00+00', "
                   "max(updated_at) < '2026-11-20 06:00+00' FROM events") == [(expected, True, True)]
    assert dbs.tgt("SELECT v FROM events WHERE id = 9002") == [("edge",)]
    md = _materialized(result)["events"]
    assert md["dagster/partition_row_count"] == expected and md["rows_with_null_cursor"] == 1
    checks = _checks(result)
    assert checks[("events", "checksum")].passed and checks[("events", "row_count")].passed
    window = "`updated_at` in [2026-11-20T05:00:00+00:00, 2026-11-20T06:00:00+00:00)"
    assert {k: v.value for k, v in checks[("events", "checksum")].metadata.items()}["scope"] == window
    assert f"rows in source and target ({window})" in checks[("events", "row_count")].description
    null_check = checks[("events", "null_cursor")]
    assert not null_check.passed and null_check.severity.value == "WARN"
    assert "1 source rows have `updated_at` NULL" in null_check.description


def test_a_24_hour_range_runs_in_one_pass_with_per_hour_counts(project, dbs):
    result = _run("sync_events", tags=RANGE_TAGS)

    assert result.success
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert steps.count("events") == 1
    events = result.get_asset_materialization_events()
    counts = {e.step_materialization_data.materialization.partition:
              e.step_materialization_data.materialization.metadata["dagster/partition_row_count"].value
              for e in events}
    assert len(counts) == 24
    for hour, n in counts.items():
        start = datetime.strptime(hour, "%Y-%m-%d-%H:%M").replace(tzinfo=timezone.utc)
        assert n == _source_count(dbs, start.isoformat(), (start + timedelta(hours=1)).isoformat()), hour
    total = dbs.src("SELECT count(*) FROM events WHERE updated_at < '2026-11-21 00:00+00'")[0][0]
    assert sum(counts.values()) == total == dbs.tgt("SELECT count(*) FROM events")[0][0]


def test_the_hourly_schedule_requests_the_last_complete_hour(project):
    defs = build_definitions()
    hourly = defs.resolve_schedule_def("sync_events_hourly")
    tick = hourly.evaluate_tick(build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 21, 10, 7, tzinfo=timezone.utc)))
    assert [r.partition_key for r in tick.run_requests] == ["2026-11-21-09:00"]
    assert hourly.cron_schedule == "7 * * * *"
    assert hourly.default_status is DefaultScheduleStatus.STOPPED


def test_batch_tables_get_daily_and_per_table_schedules_and_the_running_switch(project):
    defs = build_definitions()
    daily = defs.resolve_schedule_def("sync_daily_schedule")
    custom = defs.resolve_schedule_def("sync_nightly_schedule")
    assert (daily.cron_schedule, daily.job_name) == ("0 2 * * *", "sync_daily")
    assert (custom.cron_schedule, custom.job_name) == ("30 4 * * *", "sync_nightly")
    assert {n for n in ("sync_all", "reconcile_all", "verify_all", "sync_events", "reconcile_events")
            if defs.resolve_job_def(n)} == {"sync_all", "reconcile_all", "verify_all", "sync_events",
                                             "reconcile_events"}
    project.write_text(project.read_text().replace("minute_of_hour: 7", "minute_of_hour: 7\n  running: true"))
    running = build_definitions()
    assert running.resolve_schedule_def("sync_events_hourly").default_status is DefaultScheduleStatus.RUNNING
    assert running.resolve_schedule_def("reconcile_daily").default_status is DefaultScheduleStatus.RUNNING


def test_verify_all_covers_incremental_tables_over_the_whole_table(project, dbs):
    assert _run("sync_events", partition_key="2026-11-20-05:00").success
    checks = _checks(_run("verify_all"))
    assert not checks[("events", "row_count")].passed  # only one hour loaded: the whole table differs
    assert checks[("customers", "row_count")].passed is False  # never loaded
    assert _run("sync_events", tags=RANGE_TAGS).success


def test_reconcile_brings_deletes_to_an_incremental_table_without_a_partition(project, dbs):
    assert _run("sync_events", tags=RANGE_TAGS).success
    dbs.src("DELETE FROM events WHERE id IN (10, 20)")
    result = _run("reconcile_events")
    assert result.success
    [observation] = [e.event_specific_data.asset_observation for e in result.all_events
                     if e.event_type_value == "ASSET_OBSERVATION"]
    md = {k: v.value for k, v in observation.metadata.items()}
    assert md["rows_deleted"] == 2 and md["reconciled"]
    # the whole table: rows outside any loaded range came in too
    assert dbs.tgt("SELECT count(*) FROM events") == dbs.src("SELECT count(*) FROM events")


def test_cli_partition_range_runs_once(project, dbs, tmp_path):
    done = _dagster_cli(tmp_path, "asset", "materialize", "--select", "events",
                        "--partition-range", "2026-11-20-00:00...2026-11-20-23:00")
    assert done.returncode == 0, done.stderr[-3000:]
    total = dbs.src("SELECT count(*) FROM events WHERE updated_at < '2026-11-21 00:00+00'")[0][0]
    assert dbs.tgt("SELECT count(*) FROM events") == [(total,)]
