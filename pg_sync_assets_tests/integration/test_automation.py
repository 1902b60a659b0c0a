"""`automation_condition` and `freshness` from the table list: on the asset, evaluated by
Dagster's automation the way its daemon does, and the run it requests succeeds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions

from pg_sync_assets.definitions import build_definitions
from pg_sync_assets_tests.support import point_definitions_at

SEED = "CREATE TABLE orders (id int PRIMARY KEY, v text); INSERT INTO orders VALUES (1, 'a'), (2, 'b');"
CONFIG = """
tables:
  - source: public.orders
    automation_condition: {on_cron: "0 * * * *"}
    freshness: {fail_window: 2h, warn_window: 30m}
  - name: orders_copy
    source: public.orders
    target: copies.orders
"""


@pytest.fixture
def project(dbs, tmp_path, monkeypatch):
    return point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)


def test_an_on_cron_table_is_requested_after_its_tick_and_the_run_succeeds(project, dbs):
    defs = build_definitions()
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    orders = specs[AssetKey("orders")]
    assert orders.automation_condition is not None and specs[AssetKey("orders_copy")].automation_condition is None
    policy = orders.freshness_policy
    assert (policy.fail_window.to_timedelta(), policy.warn_window.to_timedelta()) == (
        timedelta(hours=2), timedelta(minutes=30))

    instance = DagsterInstance.ephemeral()
    start = datetime(2026, 12, 7, 10, 30, tzinfo=timezone.utc)
    first = evaluate_automation_conditions(defs, instance, evaluation_time=start)
    assert first.total_requested == 0  # no tick passed since the evaluation began
    after_tick = evaluate_automation_conditions(
        defs, instance, evaluation_time=start + timedelta(minutes=31), cursor=first.cursor)
    assert after_tick.total_requested == 1 and after_tick.get_num_requested(AssetKey("orders")) == 1
    again = evaluate_automation_conditions(
        defs, instance, evaluation_time=start + timedelta(minutes=40), cursor=after_tick.cursor)
    assert again.total_requested == 0  # once per tick
    result = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey("orders")}).execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    assert dbs.tgt("SELECT count(*) FROM orders") == [(2,)]
