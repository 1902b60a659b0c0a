"""The Dagster layer against real servers: jobs, metadata, checks, loading, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from psycopg2.extensions import make_dsn, parse_dsn

from pg_sync_assets.assets import build_table_asset
from pg_sync_assets.config import load_project
from pg_sync_assets.definitions import build_definitions
from pg_sync_assets.engine import ConfigError, TableRef, TableSpec, connect, plan_table
from pg_sync_assets.engine.plan.spec import Mode
from pg_sync_assets_tests.conftest import dbname
from pg_sync_assets_tests.support import point_definitions_at

REPO = Path(__file__).resolve().parents[2]

SEED = """
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id bigint PRIMARY KEY, status text, total numeric(10,2));
INSERT INTO shop.orders SELECT i, CASE WHEN i % 4 = 0 THEN 'paid' ELSE 'new' END, i * 0.5
FROM generate_series(1, 400) AS i;
CREATE TABLE shop."상품" ("코드" text PRIMARY KEY, "이름" text);
INSERT INTO shop."상품" VALUES ('A1', '사과'), ('B2', '배');
"""

CONFIG = """
tables:
  - source: shop.orders
    target: analytics.orders
    mode: merge
  - name: paid_orders
    source: shop.orders
    target: analytics.paid_orders
    where: status = 'paid'
  - source: shop.상품
    target: analytics.상품
"""


@pytest.fixture
def project(dbs, tmp_path, monkeypatch):
    return point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)


def _run(defs, job: str):
    return defs.resolve_job_def(job).execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False)


def _dagster_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`dagster <args> -m pg_sync_assets.definitions` in a fresh DAGSTER_HOME."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return subprocess.run(
        [sys.executable, "-m", "dagster", *args, "-m", "pg_sync_assets.definitions"],
        cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True,
        timeout=300)


def _materialized(result) -> dict[str, dict]:
    """Asset name -> its materialization's metadata values, for one run."""
    return {
        e.asset_key.to_user_string(): {
            k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def _checks(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def test_sync_all_materializes_every_table_with_metadata_and_passing_checks(project, dbs):
    defs = build_definitions()
    result = _run(defs, "sync_all")

    assert result.success
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert sorted(steps) == ["orders", "paid_orders", "sangpum"]  # one step per table, checks included
    materialized = _materialized(result)
    assert set(materialized) == {"orders", "paid_orders", "sangpum"}
    md = materialized["paid_orders"]
    assert md["dagster/row_count"] == 100 and md["rows_copied"] == 100
    target_db = dbname(dbs.target)
    assert md["dagster/table_name"] == f"{target_db}.analytics.paid_orders"  # database.schema.table
    host, port = parse_dsn(dbs.target)["host"], parse_dsn(dbs.target)["port"]
    assert md["dagster/uri"] == f"postgresql://{host}:{port}/{target_db}/analytics/paid_orders"  # no credentials
    # a first load: copied straight into the new table
    assert (md["rows_inserted"], md["rows_updated"], md["rows_deleted"]) == (100, 0, 0)
    assert md["refresh_method"].startswith("first load: copied straight into the new table")
    assert (materialized["orders"]["rows_inserted"], materialized["orders"]["rows_updated"]) == (400, 0)
    assert md["megabytes_streamed"] > 0 and md["seconds_copy"] >= 0 and "copy_rows_per_second" in md
    schema = md["dagster/column_schema"]
    assert [c.name for c in schema.columns] == ["id", "status", "total"]
    assert schema.columns[0].constraints.other == ["primary key"] and not schema.columns[0].constraints.nullable
    assert schema.constraints.other == ["primary key (id)"]
    checks = _checks(result)
    assert len(checks) == 6 and all(e.passed for e in checks.values())
    korean = defs.resolve_assets_def(AssetKey("sangpum"))
    # known at definition time too: the target's database from its connection settings
    assert korean.metadata_by_key[AssetKey("sangpum")]["dagster/table_name"] == f"{target_db}.analytics.상품"
    assert "shop.상품" in korean.descriptions_by_key[AssetKey("sangpum")]
    assert dbs.tgt('SELECT "이름" FROM analytics."상품" ORDER BY 1') == [("배",), ("사과",)]


def test_failed_checks_show_both_sides_and_verify_all_copies_nothing(project, dbs):
    defs = build_definitions()
    assert _run(defs, "sync_all").success
    dbs.tgt("UPDATE analytics.orders SET total = total + 0.01 WHERE id = 7; "
            "DELETE FROM analytics.paid_orders WHERE id = 8")

    result = _run(defs, "verify_all")

    assert result.get_asset_materialization_events() == []
    checks = _checks(result)
    assert checks[("orders", "row_count")].passed
    failed = checks[("orders", "checksum")]
    assert not failed.passed
    md = {k: v.value for k, v in failed.metadata.items()}
    assert md["source_checksum"] != md["target_checksum"]
    assert "checksums differ: source" in failed.description and "target" in failed.description
    count = checks[("paid_orders", "row_count")]
    assert not count.passed
    assert {k: v.value for k, v in count.metadata.items()}["difference"] == -1
    assert "source has 100 rows, target has 99 (WHERE status = 'paid')" in count.description
    assert "missing in target: 1 [(8)]" in count.description and "-j reconcile_all" in count.description
    assert "changed: 1 [(7)]" in failed.description
    assert (md["rows_changed"], md["rows_missing_in_target"], md["differing_keys"]) == (1, 0, ["(7)"])
    assert dbs.tgt("SELECT total::text FROM analytics.orders WHERE id = 7") == [("3.51",)]
    assert not result.success  # a failed blocking check fails its step, so the run fails


def test_verify_all_before_any_load_reports_the_missing_table(project, dbs):
    result = _run(build_definitions(), "verify_all")
    check = _checks(result)[("orders", "row_count")]
    assert not check.passed
    assert "target table `analytics.orders` does not exist; materialize the asset" in check.description


def test_passwords_never_reach_the_event_log(project, dbs, monkeypatch):
    # trust authentication accepts any password, so the run succeeds with one in the URL
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", make_dsn(dbs.source, password="s3cret-Pa55"))
    monkeypatch.setenv("PG_SYNC_TARGET_URL", make_dsn(dbs.target, password="s3cret-Pa55"))
    instance = DagsterInstance.ephemeral()
    result = build_definitions().resolve_job_def("sync_all").execute_in_process(instance=instance)
    assert result.success
    logs = instance.all_logs(result.run_id)
    assert logs and not any("s3cret-Pa55" in repr(entry) for entry in logs)


def _check(config: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pg_sync_assets check --config FILE`, as a deploy pipeline runs it."""
    return subprocess.run([sys.executable, "-m", "pg_sync_assets", "check", "--config", str(config)],
                          cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def test_the_check_command_passes_a_good_list_with_one_line_per_table(project, dbs):
    done = _check(project)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == ("ok      orders: source `shop.orders` -> target `analytics.orders` (3 columns, key: id; "
                        "target will be created)")
    assert len(lines) == 4 and lines[-1] == "3 of 3 tables ok"


def test_the_check_command_fails_a_broken_list_naming_each_problem(project, dbs, tmp_path):
    dbs.tgt("CREATE SCHEMA analytics; CREATE TABLE analytics.orders (id bigint PRIMARY KEY, status int)")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG + "  - source: shop.missing_table\n"
                   "  - source: shop.orders\n    target: analytics.by_time\n    mode: incremental\n"
                   "    incremental_column: id\n    partition_start: 2026-11-20-00:00\n", encoding="utf-8")
    done = _check(bad)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAILED  orders: target table `analytics.orders` does not match the source: "
                               "column `status` is text in the source but integer in the target")
    assert lines[1].startswith("ok      paid_orders: ")
    assert lines[3] == ("FAILED  missing_table: table entry `missing_table`: source table `shop.missing_table` "
                        "does not exist in the source database; check `source` (schema.table, names as "
                        "written, case-sensitive)")
    assert lines[4] == ("FAILED  by_time: table entry `by_time`: `incremental_column` 'id' is bigint; hourly "
                        "partitions need one of ['timestamp with time zone', 'timestamp without time zone', "
                        "'date']")
    assert lines[-1] == "2 of 5 tables ok, 3 failed"


def test_the_check_command_reports_an_unreachable_source_without_its_password(project, tmp_path):
    done = _check(project, {"PG_SYNC_SOURCE_URL": "postgresql://u:s3cret-Pa55@127.0.0.1:1/db"})
    assert done.returncode == 2
    assert "cannot connect to the source database u@127.0.0.1:1/db" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr


def test_loading_definitions_opens_no_connection_and_warns_of_nothing(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", "postgresql://u:pw@127.0.0.1:1/db")
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c",
         "import logging, psycopg2\n"
         "logging.basicConfig(level=logging.WARNING)\n"
         "def refuse(*a, **k): raise SystemExit('a connection was attempted')\n"
         "psycopg2.connect = refuse\n"
         "from pg_sync_assets.definitions import defs\n"
         "print(len(list(defs.resolve_asset_graph().get_all_asset_keys())))"],
        cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"  # 3 tables, 2 source tables
    assert "pg_sync_assets" not in done.stderr  # no warning of ours


IMPORT_EVERYTHING = """
import importlib, os, pkgutil, sys, psycopg2
import pg_sync_assets
def refuse(*a, **k): raise SystemExit('a connection was attempted')
psycopg2.connect = refuse
opened = []
def reads(mode, flags):
    # Python writes a module's bytecode cache through a temporary file on first import
    # (unless PYTHONDONTWRITEBYTECODE): only what is read counts.
    if isinstance(mode, str):
        return 'r' in mode and '+' not in mode
    return not (flags or 0) & (os.O_WRONLY | os.O_RDWR)
def audit(event, args):
    if event == 'open' and isinstance(args[0], str) and reads(args[1], args[2]) \
            and not args[0].endswith(('.py', '.pyc', '.so', '.pth')):
        opened.append(args[0])
sys.addaudithook(audit)
names = [m.name for m in pkgutil.walk_packages(pg_sync_assets.__path__, 'pg_sync_assets.')
         if m.name not in ('pg_sync_assets.definitions', 'pg_sync_assets.__main__', 'pg_sync_assets.demo.__main__')]
for name in names:
    importlib.import_module(name)
pg_sync_assets.build_defs, pg_sync_assets.TableSyncComponent
metadata = ('.egg-info', '.dist-info', '__editable__')  # package metadata, read by importlib
ours = [p for p in opened if ('pg_sync_assets' in p or p.endswith(('.yaml', '.yml', '.sql')))
        and not any(m in p for m in metadata)]
print(len(names), ours)
"""


def test_importing_any_module_opens_no_connection_and_reads_no_file_of_ours(monkeypatch):
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", "postgresql://u:pw@127.0.0.1:1/db")
    monkeypatch.setenv("PG_SYNC_CONFIG", "/nonexistent/tables.yaml")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", IMPORT_EVERYTHING], cwd=REPO,
                          env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, opened = done.stdout.split(" ", 1)
    assert int(count) > 30 and opened.strip() == "[]"


def test_a_source_url_without_a_table_list_refuses_to_load_the_demo(monkeypatch):
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", "postgresql://u@127.0.0.1:1/db")
    monkeypatch.delenv("PG_SYNC_CONFIG", raising=False)
    with pytest.raises(ConfigError) as caught:
        build_definitions()
    assert "PG_SYNC_SOURCE_URL is set but PG_SYNC_CONFIG is not" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (TableSpec(name="o", target=TableRef("a", "o"), source=TableRef("shop", "orders"),
                   primary_key=("order_id",)),
         "`primary_key` column(s) ['order_id'] do not exist in the source; available columns: "
         "['id', 'status', 'total']"),
        (TableSpec(name="o", target=TableRef("a", "o"), query="SELECT status FROM shop.orders",
                   mode=Mode.MERGE, primary_key=("status",), where="nope > 1"),
         "`where` condition 'nope > 1' fails on the source: ERROR:  column \"nope\" does not exist"),
        (TableSpec(name="o", target=TableRef("a", "o"), query="SELECT nope FROM shop.orders",
                   primary_key=("x",)),
         "`query` fails on the source: ERROR:  column \"nope\" does not exist"),
    ],
)
def test_catalog_errors_name_the_entry_and_the_key(project, dbs, spec, expected):
    message = _plan_error(dbs.source, spec)
    assert message.startswith("table entry `o`: ")
    assert expected in message


def _plan_error(url: str, spec: TableSpec) -> str:
    conn = connect(url, readonly=True)
    try:
        with pytest.raises(ConfigError) as caught, conn.cursor() as cur:
            plan_table(cur, spec)
    finally:
        conn.close()
    return str(caught.value)


def test_merge_of_a_table_without_primary_key_is_rejected(dbs):
    dbs.src("CREATE TABLE log (at timestamptz, line text)")
    spec = TableSpec(name="log", target=TableRef("public", "log"), source=TableRef("public", "log"),
                     mode=Mode.MERGE)
    message = _plan_error(dbs.source, spec)
    assert "mode `merge` needs a key, and source `public.log` has no primary key" in message
    assert "set `primary_key: [column, ...]`" in message


def test_dagster_cli_materializes_one_asset_with_its_checks(project, dbs, tmp_path):
    done = _dagster_cli(tmp_path, "asset", "materialize", "--select", "paid_orders")

    assert done.returncode == 0, done.stderr[-3000:]
    assert "ASSET_CHECK_EVALUATION" in done.stderr
    assert dbs.tgt("SELECT count(*) FROM analytics.paid_orders") == [(100,)]
    assert dbs.tgt("SELECT to_regclass('analytics.orders')") == [(None,)]


def test_resources_configured_field_by_field(project, dbs):
    from dagster import materialize
    from psycopg2.extensions import parse_dsn

    from pg_sync_assets.resources import PostgresResource

    entry = next(e for e in load_project(project).tables if e.name == "orders")
    parts = {role: parse_dsn(url) for role, url in (("source", dbs.source), ("target", dbs.target))}
    resources = {
        role: PostgresResource(host=p["host"], port=int(p["port"]), dbname=p["dbname"], user=p["user"],
                               sslmode="disable", connect_timeout=5, readonly=role == "source", role=role)
        for role, p in parts.items()
    }
    result = materialize([build_table_asset(entry)], resources=resources,
                         instance=DagsterInstance.ephemeral())
    assert result.success
    assert [e.passed for e in result.get_asset_check_evaluations()] == [True, True]
    assert dbs.tgt("SELECT count(*) FROM analytics.orders") == [(400,)]


def test_verify_all_from_the_cli_exits_non_zero_when_a_check_fails(project, dbs, tmp_path):
    assert _run(build_definitions(), "sync_all").success
    dbs.tgt("DELETE FROM analytics.orders WHERE id = 1")
    done = _dagster_cli(tmp_path, "job", "execute", "-j", "verify_all")
    assert done.returncode != 0
    assert "Asset check 'row_count' on 'orders' did not pass" in done.stderr
    assert "Asset check 'checksum' on 'paid_orders' passed" in done.stderr
    # the run's failure, at the end of the output, names the table, the key and the repair
    ending = done.stderr[done.stderr.index("RUN_FAILURE"):]
    assert "`analytics.orders` (asset `orders`) differs from the source:" in ending
    assert "- row_count: source has 400 rows, target has 399 (whole table); missing in target: 1 [(1)]" in ending
    assert "`dagster job execute -m pg_sync_assets.definitions -j reconcile_all`" in ending


def test_checks_report_the_pre_commit_verification_in_a_materializing_run(project, dbs):
    defs = build_definitions()
    materialized = _run(defs, "sync_all")
    dbs.src("INSERT INTO shop.orders VALUES (401, 'paid', 1)")  # the source moves on

    verified = _checks(materialized)[("paid_orders", "checksum")]
    live = _checks(_run(defs, "verify_all"))[("paid_orders", "row_count")]

    assert verified.passed
    md = {k: v.value for k, v in verified.metadata.items()}
    assert md["compared"] == "verified inside the materialization, against the source snapshot it copied"
    assert md["source_checksum"] == md["target_checksum"]
    assert not live.passed
    assert {k: v.value for k, v in live.metadata.items()}["compared"].startswith("compared live")


def test_reconcile_all_repairs_the_differing_rows_and_the_checks_pass(project, dbs):
    defs = build_definitions()
    assert _run(defs, "sync_all").success
    dbs.tgt("UPDATE analytics.orders SET total = 0 WHERE id IN (5, 6); "
            "DELETE FROM analytics.orders WHERE id = 9")

    result = _run(defs, "reconcile_all")

    assert result.success
    md = _materialized(result)
    assert (md["orders"]["rows_changed"], md["orders"]["rows_missing_in_target"]) == (2, 1)
    assert (md["orders"]["rows_updated"], md["orders"]["rows_inserted"]) == (2, 1)
    assert md["paid_orders"]["rows_copied"] == 0 and md["paid_orders"]["reconciled"]
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert _checks(_run(defs, "verify_all"))[("orders", "checksum")].passed


def test_one_table_is_reconciled_from_the_cli(project, dbs, tmp_path):
    assert _run(build_definitions(), "sync_all").success
    dbs.tgt("DELETE FROM analytics.paid_orders WHERE id = 8")
    done = _dagster_cli(tmp_path, "asset", "materialize", "--select", "paid_orders", "--config-json",
                        '{"ops": {"paid_orders": {"config": {"reconcile": true}}}}')
    assert done.returncode == 0, done.stderr[-3000:]
    assert dbs.tgt("SELECT count(*) FROM analytics.paid_orders WHERE id = 8") == [(1,)]


def test_the_daily_reconcile_schedule_exists_and_starts_stopped(project):
    from dagster import DefaultScheduleStatus

    schedule = build_definitions().resolve_schedule_def("reconcile_daily")
    assert (schedule.job_name, schedule.cron_schedule) == ("reconcile_all", "0 3 * * *")
    assert schedule.default_status is DefaultScheduleStatus.STOPPED


def test_a_malformed_url_never_reaches_the_event_log_or_the_cli(project, dbs, tmp_path, monkeypatch):
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", "postgresql://u:Pct%ZZs3cret-Pa55@127.0.0.1/db")
    instance = DagsterInstance.ephemeral()
    result = build_definitions().resolve_job_def("sync_all").execute_in_process(
        instance=instance, raise_on_error=False)
    assert not result.success
    logs = [repr(entry) for entry in instance.all_logs(result.run_id)]
    assert not any("s3cret" in entry for entry in logs)
    assert any("the connection string for `source` is malformed" in entry for entry in logs)

    done = _dagster_cli(tmp_path, "asset", "materialize", "--select", "orders")
    assert done.returncode != 0
    assert "s3cret" not in done.stdout + done.stderr
    assert "the connection string for `source` is malformed (invalid percent-encoded token" in done.stderr


def test_lineage_from_each_source_table_with_columns(project, dbs, tmp_path):
    query = tmp_path / "query.yaml"
    query.write_text(CONFIG + "  - name: revenue\n    query: >-\n      WITH o AS (SELECT * FROM shop.orders)\n"
                     "      SELECT p.\"코드\", count(*) AS n FROM o, shop.\"상품\" p GROUP BY 1\n"
                     "    target: analytics.revenue\n    primary_key: [코드]\n    mode: merge\n",
                     encoding="utf-8")
    defs = build_definitions(query)
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents["orders"] == parents["paid_orders"] == ["source/shop/orders"]
    assert parents["sangpum"] == ["source/shop/sangpum"]
    assert parents["revenue"] == ["source/shop/orders", "source/shop/sangpum"]  # the CTE `o` is no table
    external = graph.get(AssetKey(["source", "shop", "sangpum"]))
    assert external.metadata["dagster/table_name"] == "shop.상품" and not external.is_materializable
    assert (external.group_name, graph.get(AssetKey("orders")).group_name) == ("source", "target")

    md = _materialized(_run(defs, "sync_all"))["orders"]
    lineage = md["dagster/column_lineage"]
    assert {c: [(d.asset_key.to_user_string(), d.column_name) for d in deps]
            for c, deps in lineage.deps_by_column.items()} == {
        c: [("source/shop/orders", c)] for c in ("id", "status", "total")}


def test_a_second_sync_compares_first_and_says_what_it_skipped(project, dbs):
    defs = build_definitions()
    assert _run(defs, "sync_all").success
    dbs.src("UPDATE shop.orders SET total = total + 1 WHERE id = 7")

    result = _run(defs, "sync_all")

    assert result.success
    md = _materialized(result)
    orders, paid = md["orders"], md["paid_orders"]
    assert orders["refresh_method"] == "differential: only the rows that differed were copied and written"
    assert (orders["rows_copied"], orders["rows_updated"], orders["diff_rows_changed"]) == (1, 1, 1)
    assert orders["diff_outcome"].startswith("1 rows copied, 0 only in the target; ")
    assert orders["diff_key_buckets_equal"] == int(orders["diff_key_buckets"]) - 1
    # paid_orders' scope (status = 'paid') does not hold id 7: its totals were equal.
    assert paid["diff_outcome"] == "source and target checksums are equal: nothing was copied or written"
    assert paid["rows_copied"] == 0 and "seconds_compare" in paid
    assert all(e.passed for e in result.get_asset_check_evaluations())
