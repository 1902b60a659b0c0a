"""`mode: cdc` through Dagster: the connection's job and its schedule's tick, the checks
(the run's own proof, `verify_all` over the whole table with changes in flight, the lag
check), `check`'s feed line and `cdc-drop`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_schedule_context

from pg_sync_assets.definitions import build_definitions
from pg_sync_assets_tests.integration.test_dagster import _checks, _materialized
from pg_sync_assets_tests.support import point_definitions_at

REPO = Path(__file__).resolve().parents[2]

SEED = """
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id int PRIMARY KEY, status text, amount numeric(10,2));
INSERT INTO shop.orders SELECT g, 'new', g FROM generate_series(1, 500) g;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'kim'), (2, 'lee');
"""

CONFIG = """
connections:
  shop:
    url: {env: PG_SYNC_SOURCE_URL}
    cdc_slot: shop_feed
  warehouse:
    url: {env: PG_SYNC_TARGET_URL}
schedules:
  cdc_cron: "*/10 * * * *"
defaults:
  source_connection: shop
  target_connection: warehouse
tables:
  - source: shop.orders
    target: public.orders
    mode: cdc
    cdc_max_lag_mb: 64
  - source: public.customers
"""


@pytest.fixture
def project(dbs, tmp_path, monkeypatch):
    return point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)


def _run(job: str, **kw):
    return build_definitions().resolve_job_def(job).execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False, **kw
    )


def test_the_cdc_schedule_ticks_its_job_which_copies_then_applies_changes(project, dbs):
    defs = build_definitions()
    schedule = defs.get_repository_def().get_schedule_def("cdc_shop_schedule")
    assert schedule.cron_schedule == "*/10 * * * *"
    assert defs.resolve_job_def("cdc_shop").asset_layer is not None
    # the batch jobs leave the cdc table to its own job
    assert [k.to_user_string() for k in defs.resolve_job_def("sync_all").asset_layer.executable_asset_keys] == [
        "customers"
    ]
    tick = schedule.evaluate_tick(
        build_schedule_context(scheduled_execution_time=datetime(2026, 12, 7, 12, 10, tzinfo=timezone.utc))
    )
    assert len(tick.run_requests) == 1
    first = _run("cdc_shop", run_config=tick.run_requests[0].run_config)
    assert first.success
    meta = _materialized(first)["orders"]
    assert meta["refresh_method"] == "cdc: copied from the snapshot of a new replication slot"
    assert dbs.src("SELECT slot_name FROM pg_replication_slots") == [("shop_feed",)]

    dbs.src("UPDATE shop.orders SET status = 'paid' WHERE id <= 10; DELETE FROM shop.orders WHERE id = 500")
    second = _run("cdc_shop")
    assert second.success
    meta = _materialized(second)["orders"]
    assert meta["refresh_method"] == "cdc: applied the source's committed changes"
    assert (meta["rows_updated"], meta["rows_deleted"], meta["cdc_changes_applied"]) == (10, 1, 11)
    assert meta["dagster/row_count"] == 499
    checks = _checks(second)
    assert checks[("orders", "checksum")].passed
    assert "rows of the keys the changes touched" in checks[("orders", "checksum")].description
    assert checks[("orders", "cdc_lag")].passed
    assert dbs.tgt("SELECT count(*), sum(amount) FROM orders") == dbs.src("SELECT count(*), sum(amount) FROM shop.orders")


def test_verify_all_compares_the_whole_table_ignores_changes_in_flight_and_catches_tampering(project, dbs, tmp_path):
    assert _run("cdc_shop").success
    dbs.src("UPDATE shop.orders SET amount = amount + 1 WHERE id <= 3")  # in flight: not applied yet
    checks = _checks(_run("verify_all"))
    assert checks[("orders", "checksum")].passed, checks[("orders", "checksum")].description
    assert "without the 3 keys changed on the source" in checks[("orders", "checksum")].metadata["compared"].value

    dbs.tgt("UPDATE orders SET status = 'tampered' WHERE id = 100")
    result = _run("verify_all")
    checks = _checks(result)
    assert not checks[("orders", "checksum")].passed
    description = checks[("orders", "checksum")].description
    assert "100" in description and "reconcile" in description
    # the printed repair, as printed, repairs it
    command = description.split("run `", 1)[1].split("`", 1)[0]
    assert command.startswith("dagster asset materialize -m pg_sync_assets.definitions --select orders")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run(
        [sys.executable, "-m", *shlex.split(command)],
        cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _checks(_run("verify_all"))[("orders", "checksum")].passed
    assert _run("cdc_shop").success  # and the feed goes on from its position
    assert dbs.tgt("SELECT sum(amount) FROM orders") == dbs.src("SELECT sum(amount) FROM shop.orders")


def test_the_lag_check_fails_past_the_threshold_with_the_job_to_run(project, dbs):
    assert _run("cdc_shop").success
    dbs.src("CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 200000) g")
    checks = _checks(_run("verify_all"))
    lag = checks[("orders", "cdc_lag")]
    assert not lag.passed and lag.metadata["lag_mb"].value > 64
    assert "run the job `cdc_shop`" in lag.description
    assert _run("cdc_shop").success
    assert _checks(_run("verify_all"))[("orders", "cdc_lag")].passed


def test_check_shows_the_feed_and_cdc_drop_removes_what_a_removed_connection_left(project, dbs, tmp_path):
    assert _run("cdc_shop").success
    check = subprocess.run(
        [sys.executable, "-m", "pg_sync_assets", "check", "--config", str(project)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "feed    shop: slot `shop_feed`, publication `pg_sync_shop`" in check.stdout
    assert "MB of WAL" in check.stdout

    # The commands docs/cdc.md shows, exactly as written (the list comes from PG_SYNC_CONFIG).
    drop_connection = "python -m pg_sync_assets cdc-drop --connection shop"
    drop_table = "python -m pg_sync_assets cdc-drop --connection shop --table shop.orders"
    docs = (REPO / "docs" / "cdc.md").read_text(encoding="utf-8")
    assert drop_connection + " " in docs and drop_table + " " in docs

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *shlex.split(command)[1:]], cwd=REPO, capture_output=True, text=True, timeout=120
        )

    refused = run(drop_connection)
    assert refused.returncode == 1 and "still has cdc tables in the list (orders)" in refused.stdout
    refused = run(drop_table)
    assert refused.returncode == 1 and "`shop.orders` is still a cdc table" in refused.stdout
    project.write_text(CONFIG.replace("    mode: cdc\n    cdc_max_lag_mb: 64\n", ""), encoding="utf-8")
    table_out = run(drop_table)
    assert table_out.returncode == 0, table_out.stdout + table_out.stderr
    assert "removed `shop.orders` from publication `pg_sync_shop`" in table_out.stdout
    assert dbs.src("SELECT count(*) FROM pg_publication_tables") == [(0,)]
    dropped = run(drop_connection)
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "dropped replication slot `shop_feed`" in dropped.stdout
    assert dbs.src("SELECT count(*) FROM pg_replication_slots") == [(0,)]
    assert dbs.src("SELECT count(*) FROM pg_publication") == [(0,)]
