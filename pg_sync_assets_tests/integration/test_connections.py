"""Two source databases and one target through named connections: resources, lineage,
the sync itself, the `check` command, and secrets kept out of the event log."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.errors import DagsterInvalidConfigError
from dagster._serdes import serialize_value
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from pg_sync_assets import build_defs
from pg_sync_assets_tests.conftest import execute

REPO = Path(__file__).resolve().parents[2]
SECRET = "Pa55-" + uuid.uuid4().hex  # sent to a trust-auth server, which ignores it

SHOP_SEED = """
CREATE TABLE public.orders (id bigint PRIMARY KEY, total numeric(10,2), note text);
INSERT INTO public.orders VALUES (1, 10.50, 'a'), (2, 20.00, NULL), (3, 0.99, '상품');
"""
BILLING_SEED = """
CREATE TABLE public.orders (id bigint PRIMARY KEY, amount numeric(12,2), paid boolean);
INSERT INTO public.orders VALUES (7, 100.00, true), (8, 5.25, false);
"""

CONFIG = """
connections:
  shop:
    url: {env: SHOP_URL}
  billing:
    host: %(host)s
    port: {env: BILLING_PORT}
    dbname: %(dbname)s
    user: %(user)s
    password: {env: BILLING_PASSWORD}
  warehouse:
    url: {env: WAREHOUSE_URL}
defaults:
  target_connection: warehouse
  owners: [team:data]
tables:
  - source: public.orders
    source_connection: shop
    target: shop.orders
    mode: merge
  - source: public.orders
    source_connection: billing
    target: billing.orders
    key_prefix: billing
    tags: {domain: finance}
    retries: 2
"""


@pytest.fixture
def billing(servers):
    """A second source database, on the source server."""
    name = f"billing_{uuid.uuid4().hex[:10]}"
    execute(servers.source_url, sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
        sql.Identifier(name)))
    try:
        yield make_dsn(servers.source_url, dbname=name)
    finally:
        execute(servers.source_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def two_sources(dbs, billing, tmp_path, monkeypatch):
    """The table list's path, with its environment set."""
    execute(dbs.source, SHOP_SEED)
    execute(billing, BILLING_SEED)
    parts = parse_dsn(billing)
    path = tmp_path / "tables.yaml"
    path.write_text(CONFIG % {"host": parts["host"], "dbname": parts["dbname"], "user": parts["user"]},
                    encoding="utf-8")
    for var, value in {"SHOP_URL": dbs.source, "BILLING_PORT": parts["port"], "BILLING_PASSWORD": SECRET,
                       "WAREHOUSE_URL": dbs.target}.items():
        monkeypatch.setenv(var, value)
    return path


def test_each_connection_is_a_resource_and_sources_are_read_only(two_sources):
    defs = build_defs(two_sources)
    resources = defs.resources
    assert set(resources) == {"shop", "billing", "warehouse"}
    assert (resources["shop"].readonly, resources["billing"].readonly, resources["warehouse"].readonly) == (
        True, True, False)
    live = resources["billing"].process_config_and_initialize()
    with live.get_connection("test") as conn, conn.cursor() as cur:
        cur.execute("SHOW transaction_read_only")
        assert cur.fetchone() == ("on",)
    required = defs.resolve_assets_def(AssetKey(["billing", "orders"])).required_resource_keys
    assert required - {"io_manager"} == {"billing", "warehouse"}


def test_lineage_groups_owners_and_tags_read_back_from_the_definitions(two_sources):
    defs = build_defs(two_sources)
    specs = {a.key: a for a in defs.resolve_all_asset_specs()}
    shop_src, billing_src = AssetKey(["shop", "public", "orders"]), AssetKey(["billing", "public", "orders"])
    table = specs[AssetKey(["billing", "orders"])]
    assert [d.asset_key for d in table.deps] == [billing_src]
    assert [d.asset_key for d in specs[AssetKey("orders")].deps] == [shop_src]
    assert (table.group_name, table.owners, table.tags["domain"]) == ("warehouse", ["team:data"], "finance")
    assert table.metadata["dagster/table_name"].endswith(".billing.orders")  # database.schema.table
    assert table.code_version and table.code_version != specs[AssetKey("orders")].code_version
    for key, group in ((shop_src, "shop"), (billing_src, "billing")):
        assert specs[key].group_name == group
        assert specs[key].metadata["dagster/table_name"] == "public.orders"
        assert specs[key].kinds == {"postgres"}


def test_both_sources_sync_into_one_target_with_checks_and_column_lineage(two_sources, dbs):
    defs = build_defs(two_sources)
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("sync_all").execute_in_process(instance=instance)
    assert result.success
    assert execute(dbs.target, "SELECT id, total::text, note FROM shop.orders ORDER BY id") == [
        (1, "10.50", "a"), (2, "20.00", None), (3, "0.99", "상품")]
    assert execute(dbs.target, "SELECT id, amount::text, paid FROM billing.orders ORDER BY id") == [
        (7, "100.00", True), (8, "5.25", False)]
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {("orders", "row_count"): True, ("orders", "checksum"): True,
                      ("billing/orders", "row_count"): True, ("billing/orders", "checksum"): True}
    [billing_mat] = [e for e in result.get_asset_materialization_events()
                     if e.asset_key == AssetKey(["billing", "orders"])]
    lineage = billing_mat.step_materialization_data.materialization.metadata["dagster/column_lineage"].value
    assert {c: [(d.asset_key.to_user_string(), d.column_name) for d in deps]
            for c, deps in lineage.deps_by_column.items()} == {
        "id": [("billing/public/orders", "id")], "amount": [("billing/public/orders", "amount")],
        "paid": [("billing/public/orders", "paid")]}
    # The password went into a session (trust auth ignores it) and nowhere else.
    records = instance.all_logs(result.run_id)
    assert records and all(SECRET not in serialize_value(r) for r in records)

    # verify_all compares each table through its own pair of connections, copying nothing.
    execute(dbs.target, "UPDATE billing.orders SET paid = NOT paid WHERE id = 8")
    verified = defs.resolve_job_def("verify_all").execute_in_process(instance=instance, raise_on_error=False)
    assert not verified.success and not verified.get_asset_materialization_events()
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
              for e in verified.get_asset_check_evaluations()}
    assert checks == {("orders", "row_count"): True, ("orders", "checksum"): True,
                      ("billing/orders", "row_count"): True, ("billing/orders", "checksum"): False}


def test_a_missing_environment_variable_fails_the_run_naming_it_not_the_load(two_sources, monkeypatch, dbs):
    monkeypatch.delenv("BILLING_PORT")
    defs = build_defs(two_sources)  # loads: the variable is read when a run starts
    with pytest.raises(DagsterInvalidConfigError) as caught:
        defs.resolve_job_def("sync_all").execute_in_process(instance=DagsterInstance.ephemeral())
    assert 'environment variable "BILLING_PORT" which is not set' in str(caught.value)
    assert SECRET not in str(caught.value)
    assert execute(dbs.target, "SELECT to_regclass('shop.orders')") == [(None,)]


def test_the_check_command_opens_each_connection_once_and_names_them(two_sources):
    done = subprocess.run([sys.executable, "-m", "pg_sync_assets", "check", "--config", str(two_sources)],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "ok      orders: shop `public.orders` -> warehouse `shop.orders` (3 columns, key: id; target will "
        "be created)",
        "ok      orders: billing `public.orders` -> warehouse `billing.orders` (3 columns, key: id; target "
        "will be created)",
        "2 of 2 tables ok",
    ]
    env = {**os.environ, "BILLING_PORT": "1"}
    done = subprocess.run([sys.executable, "-m", "pg_sync_assets", "check", "--config", str(two_sources)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout.startswith("cannot connect to the billing database loader") or \
        "cannot connect to the billing database" in done.stdout
    assert SECRET not in done.stdout + done.stderr
