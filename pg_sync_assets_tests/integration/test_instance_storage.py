"""Dagster's instance on PostgreSQL (dagster-postgres), as a deployment runs it: both
documented forms of `dagster.yaml` (`postgres_db:` fields and `postgres_url:`), a
materialization and a partition range from the CLI, and a real `dagster-daemon` that
launches a scheduled run by itself and sees it succeed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from pg_sync_assets_tests.conftest import execute
from pg_sync_assets_tests.support import instance_yaml, point_definitions_at

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))
SEED = """
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 50) i;
CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text);
INSERT INTO events SELECT i, timestamptz '2026-11-20 00:00+00' + i * interval '61 seconds', 'v' || i
FROM generate_series(1, 300) i;
"""
CONFIG = """\
tables:
  - source: public.customers
  - source: public.events
    mode: incremental
    incremental_column: updated_at
    partition_start: 2026-11-20-00:00
"""


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    return {**env, "DAGSTER_HOME": str(home)}


def _runs(servers, dbname: str) -> list[tuple]:
    url = psycopg2.extensions.make_dsn(servers.target_url, dbname=dbname)
    return execute(url, "SELECT pipeline_name, status FROM runs ORDER BY create_timestamp")


@pytest.mark.parametrize("form", ["postgres_db", "postgres_url"])
def test_cli_runs_are_stored_in_postgres_in_both_documented_forms(
    form, servers, dbs, instance_db, tmp_path, monkeypatch
):
    point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(form, servers.target_url, instance_db), encoding="utf-8")
    for args in (
        ["--select", "customers"],
        ["--select", "events", "--partition-range", "2026-11-20-00:00...2026-11-20-04:00"],
    ):
        done = subprocess.run(
            [DAGSTER, "asset", "materialize", "-m", "pg_sync_assets.definitions", *args],
            cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert _runs(servers, instance_db) == [("__ASSET_JOB", "SUCCESS"), ("__ASSET_JOB", "SUCCESS")]
    assert not (home / "history").exists()  # nothing went to SQLite under DAGSTER_HOME
    assert dbs.tgt("SELECT count(*) FROM public.events") == [(295,)]


def test_the_daemon_launches_a_scheduled_run_and_sees_it_succeed(servers, dbs, instance_db, tmp_path, monkeypatch):
    """A schedule whose cron fires every minute, running from the start; the daemon (and
    only the daemon) launches its run. Bounded: at most about two minutes."""
    config = "schedules:\n  running: true\ntables:\n  - source: public.customers\n    schedule: '* * * * *'\n"
    point_definitions_at(dbs, tmp_path, monkeypatch, SEED, config)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml("postgres_db", servers.target_url, instance_db), encoding="utf-8")
    # As a deployment does before its processes start together (operations page).
    migrated = subprocess.run([DAGSTER, "instance", "migrate"], cwd=REPO, env=_env(home), capture_output=True,
                              text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    daemon = subprocess.Popen(
        [DAEMON, "run", "-m", "pg_sync_assets.definitions"], cwd=REPO, env=_env(home),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        runs: list[tuple] = []
        while time.monotonic() < deadline and daemon.poll() is None:
            try:
                runs = _runs(servers, instance_db)
            except psycopg2.Error:  # the daemon has not created its tables yet
                runs = []
            if ("sync_customers", "SUCCESS") in runs:
                break
            time.sleep(2)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            _, stderr = daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            _, stderr = daemon.communicate()
    assert ("sync_customers", "SUCCESS") in runs, (runs, stderr[-3000:])
    assert dbs.tgt("SELECT count(*) FROM public.customers") == [(50,)]
