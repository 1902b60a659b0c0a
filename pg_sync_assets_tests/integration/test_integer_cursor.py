"""`mode: incremental` on an integer column without `partition_start`: each run copies the
source rows above the target's maximum minus `lookback_rows`, and verifies that range."""

from __future__ import annotations

import pytest
from dagster import AssetKey, DagsterInstance

from pg_sync_assets.config import parse_config
from pg_sync_assets.definitions import build_definitions
from pg_sync_assets.engine import ConfigError, Mode, TableRef, TableSpec
from pg_sync_assets_tests.support import compare, point_definitions_at, run_sync, table_text

LOG = TableRef("public", "로그")

SEED = """
CREATE TABLE "로그" (id bigserial PRIMARY KEY, kind text NOT NULL, body jsonb);
INSERT INTO "로그" (kind, body) SELECT 'k' || (i % 7), jsonb_build_object('n', i) FROM generate_series(1, 1000) AS i;
"""


def _spec(lookback_rows: int = 0) -> TableSpec:
    return TableSpec(name="log", source=LOG, target=LOG, mode=Mode.INCREMENTAL, incremental_column="id",
                     lookback_rows=lookback_rows)


def test_each_run_copies_the_rows_above_the_target_maximum_and_verifies_them(dbs):
    dbs.src(SEED)
    first = run_sync(dbs, _spec(lookback_rows=10))
    assert (first.rows_copied, first.cursor_after, first.target_rows) == (1000, None, 1000)

    dbs.src("INSERT INTO \"로그\" (kind) SELECT 'new' FROM generate_series(1, 50)")
    # a row that committed late, with an id below the maximum but inside the lookback
    dbs.src("INSERT INTO \"로그\" (id, kind) VALUES (995, 'late') ON CONFLICT (id) DO UPDATE SET kind = 'late'")
    second = run_sync(dbs, _spec(lookback_rows=10))

    assert second.cursor_after == 990  # max 1000 minus 10
    assert second.rows_copied == 60  # ids 991..1050
    assert (second.inserted, second.updated, second.target_rows) == (50, 1, 1050)
    assert second.verification.source.rows == 60
    assert second.verification.final == second.verification.source
    assert table_text(dbs.target, LOG, "id") == table_text(dbs.source, LOG, "id")
    assert compare(dbs, _spec()).checksums_match


def test_rows_below_the_lookback_are_not_reread(dbs):
    # The mode is for append-only tables: a change far below the maximum is left alone
    # by design (a full_refresh, merge or reconcile picks it up), and the checks see it.
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.src("UPDATE \"로그\" SET kind = 'changed' WHERE id = 3")

    result = run_sync(dbs, _spec())

    assert (result.cursor_after, result.rows_copied) == (1000, 0)
    assert dbs.tgt("SELECT kind FROM \"로그\" WHERE id = 3") == [("k3",)]
    assert not compare(dbs, _spec()).checksums_match


def test_a_timestamp_cursor_without_partitions_is_refused_with_advice(dbs):
    dbs.src("CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL)")
    spec = TableSpec(name="events", source=TableRef("public", "events"), target=TableRef("public", "events"),
                     mode=Mode.INCREMENTAL, incremental_column="at")
    with pytest.raises(ConfigError) as caught:
        run_sync(dbs, spec)
    assert ("`incremental_column` 'at' is timestamp with time zone; without `partition_start` it must be "
            "an integer column (smallint, integer, bigint)") in str(caught.value)


@pytest.mark.parametrize(("extra", "message"), [
    ({"lookback_rows": 5, "partition_start": "2026-11-20-00:00"},
     "`lookback_rows` applies to an integer cursor (no `partition_start`); hourly partitions use `lookback`"),
    ({"timezone": "Asia/Seoul"}, "['timezone'] apply to hourly partitions: set `partition_start`"),
    ({"lookback": 2}, "['lookback'] apply to hourly partitions: set `partition_start`"),
    ({"lookback_rows": -1}, "`lookback_rows` must be a whole number of rows, 0 or more, got -1"),
    ({"lookback_rows": "10"}, "`lookback_rows` must be a whole number of rows, 0 or more, got '10'"),
])
def test_integer_cursor_settings_are_checked_at_load(extra, message):
    entry = {"source": "public.로그", "mode": "incremental", "incremental_column": "id", **extra}
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [entry]})
    assert message in str(caught.value)


CONFIG = """\
tables:
  - name: log
    source: public.로그
    mode: incremental
    incremental_column: id
    lookback_rows: 100
"""


def test_an_integer_cursor_table_is_a_plain_asset_in_sync_all(dbs, tmp_path, monkeypatch):
    point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)
    defs = build_definitions()
    assert defs.resolve_assets_def(AssetKey("log")).partitions_def is None
    instance = DagsterInstance.ephemeral()

    first = defs.resolve_job_def("sync_all").execute_in_process(instance=instance)
    dbs.src("INSERT INTO \"로그\" (kind) SELECT 'new' FROM generate_series(1, 5)")
    second = defs.resolve_job_def("sync_all").execute_in_process(instance=instance)

    assert first.success and second.success
    metadata = second.asset_materializations_for_node("log")[0].metadata
    assert metadata["cursor_after"].value == "`id` > 900"
    assert metadata["rows_copied"].value == 105
    checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
    assert checks["checksum"].passed and checks["row_count"].passed
    assert checks["checksum"].metadata["scope"].value.endswith("`id` in (900, ∞)")
    assert compare(dbs, _spec()).checksums_match

    reconciled = defs.resolve_job_def("reconcile_all").execute_in_process(instance=instance)
    assert reconciled.success
    metadata = reconciled.asset_materializations_for_node("log")[0].metadata
    assert metadata["cursor_after"].value == "every row (a reconcile compares the whole table)"
