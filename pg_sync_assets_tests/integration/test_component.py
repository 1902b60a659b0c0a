"""TableSyncComponent in a real `dg` project: scaffolded, checked and listed by the `dg`
CLI, two instances side by side, and their jobs run against the test servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from pg_sync_assets_tests.conftest import execute

DG = str(Path(sys.executable).parent / "dg")

PYPROJECT = """
[project]
name = "warehouse_sync"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "warehouse_sync"
"""

DEFINITIONS = """
from pathlib import Path

from dagster import definitions, load_from_defs_folder


@definitions
def defs():
    return load_from_defs_folder(path_within_project=Path(__file__).parent)
"""

BILLING = """
type: pg_sync_assets.TableSyncComponent

attributes:
  connections:
    billing:
      url: {env: BILLING_URL}
    warehouse:
      url: {env: WAREHOUSE_DATABASE_URL}
  defaults:
    source_connection: billing
    target_connection: warehouse
    key_prefix: billing
  tables:
    - source: public.invoices
      target: billing.invoices
      mode: merge
"""


def _dg(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DG, *args], cwd=project, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)


def _project_defs(project: Path, monkeypatch):
    """The Definitions of the project made by `dg_project`, imported in this process (an
    earlier test's project of the same package name is forgotten first)."""
    for name in [m for m in sys.modules if m == "warehouse_sync" or m.startswith("warehouse_sync.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(project))
    from warehouse_sync.definitions import defs  # noqa: PLC0415 - the project made by the fixture

    return defs()


@pytest.fixture
def dg_project(tmp_path, dbs, monkeypatch):
    """A dg project with a `shop` instance (scaffolded by dg, then edited) and a `billing`
    instance, both reading the test source and writing the test target."""
    execute(dbs.source, "CREATE TABLE public.orders (id bigint PRIMARY KEY, total numeric(10,2));"
                        "INSERT INTO public.orders SELECT i, i / 4.0 FROM generate_series(1, 50) i;"
                        "CREATE TABLE public.invoices (no text PRIMARY KEY, paid boolean);"
                        "INSERT INTO public.invoices VALUES ('F-1', true), ('F-2', false);")
    project = tmp_path / "warehouse_sync"
    package = project / "warehouse_sync"
    (package / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    for var, value in {"SHOP_DATABASE_URL": dbs.source, "BILLING_URL": dbs.source,
                       "WAREHOUSE_DATABASE_URL": dbs.target}.items():
        monkeypatch.setenv(var, value)
    return project


def test_dg_scaffolds_checks_and_lists_two_instances(dg_project):
    done = _dg(dg_project, "scaffold", "defs", "pg_sync_assets.TableSyncComponent", "shop")
    assert done.returncode == 0, done.stdout + done.stderr
    scaffolded = dg_project / "warehouse_sync" / "defs" / "shop" / "defs.yaml"
    document = yaml.safe_load(scaffolded.read_text())
    assert document["type"] == "pg_sync_assets.TableSyncComponent"
    assert document["attributes"]["tables"] == [{"source": "public.orders", "target": "shop.orders",
                                                 "mode": "merge"}]
    (dg_project / "warehouse_sync" / "defs" / "billing").mkdir()
    (dg_project / "warehouse_sync" / "defs" / "billing" / "defs.yaml").write_text(BILLING)

    done = _dg(dg_project, "check", "defs")
    assert done.returncode == 0, done.stdout + done.stderr
    done = _dg(dg_project, "list", "defs")  # as the README writes it: a table for people
    assert done.returncode == 0 and "shop_sync_all" in done.stdout, done.stderr
    done = _dg(dg_project, "list", "defs", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert assets["orders"]["dependency_keys"] == ["shop/public/orders"]
    assert assets["billing/invoices"]["dependency_keys"] == ["billing/public/invoices"]
    assert (assets["billing/invoices"]["group_name"], assets["billing/public/invoices"]["group_name"]) == (
        "warehouse", "billing")
    # Each instance's jobs carry its folder's name; the shared `warehouse` connection is one resource.
    assert {j["name"] for j in listed["jobs"]} >= {"shop_sync_all", "billing_sync_all", "shop_verify_all",
                                                   "billing_verify_all"}
    assert sorted(r["name"] for r in listed["resources"]) == ["billing", "shop", "warehouse"]


def test_a_bad_instance_fails_dg_check_naming_its_file_and_entry(dg_project):
    bad = dg_project / "warehouse_sync" / "defs" / "billing"
    bad.mkdir()
    (bad / "defs.yaml").write_text(BILLING.replace("      mode: merge", "      mode: merge\n      owners: [kim]"))
    done = _dg(dg_project, "check", "defs")
    assert done.returncode != 0
    assert (f"`{bad / 'defs.yaml'}`, table entry 1 (`billing.invoices`): `owners` must be email addresses or "
            "`team:NAME`, got ['kim']") in done.stdout + done.stderr


def test_component_instances_sync_in_one_code_location(dg_project, dbs, monkeypatch):
    _dg(dg_project, "scaffold", "defs", "pg_sync_assets.TableSyncComponent", "shop")
    (dg_project / "warehouse_sync" / "defs" / "billing").mkdir()
    (dg_project / "warehouse_sync" / "defs" / "billing" / "defs.yaml").write_text(BILLING)
    resolved = _project_defs(dg_project, monkeypatch)
    instance = DagsterInstance.ephemeral()
    for job in ("shop_sync_all", "billing_sync_all"):
        result = resolved.resolve_job_def(job).execute_in_process(instance=instance)
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
    assert execute(dbs.target, "SELECT count(*), sum(total)::text FROM shop.orders") == [(50, "318.75")]
    assert execute(dbs.target, "SELECT no, paid FROM billing.invoices ORDER BY no") == [
        ("F-1", True), ("F-2", False)]
    assert resolved.resolve_assets_def(AssetKey(["billing", "invoices"])).group_names_by_key[
        AssetKey(["billing", "invoices"])] == "warehouse"


SHOP_HEADER = """
type: pg_sync_assets.TableSyncComponent

requirements:
  env: [SHOP_DATABASE_URL, WAREHOUSE_DATABASE_URL]

attributes:
  connections:
    shop:
      url: "{{ env.SHOP_DATABASE_URL }}"
    warehouse:
      url: "{{ env.WAREHOUSE_DATABASE_URL }}"
  defaults:
    source_connection: shop
    target_connection: warehouse
  tables:
"""
SHOP_TWICE = SHOP_HEADER + """    - source: public.orders
      target: %s.orders
"""


def test_two_instances_reading_one_source_table_share_its_asset(dg_project):
    for name in ("nightly", "hourly"):
        folder = dg_project / "warehouse_sync" / "defs" / name
        folder.mkdir()
        (folder / "defs.yaml").write_text(SHOP_TWICE % name + f"      name: orders_{name}\n")
    done = _dg(dg_project, "list", "defs", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assets = {a["asset_key"]: a for a in json.loads(done.stdout)["assets"]}
    assert assets["orders_nightly"]["dependency_keys"] == assets["orders_hourly"]["dependency_keys"] == [
        "shop/public/orders"]
    assert "shop/public/orders" in assets


def test_dg_check_yaml_names_a_misspelt_table_key_with_its_line(dg_project):
    folder = dg_project / "warehouse_sync" / "defs" / "shop"
    folder.mkdir()
    (folder / "defs.yaml").write_text((SHOP_TWICE % "shop").replace("      target: shop.orders",
                                                                     "      target: shop.orders\n      primery_key: [id]"))
    done = _dg(dg_project, "check", "yaml")
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "primery_key" in output
    assert "defs.yaml:19" in output, output  # the line of the typo
    (folder / "defs.yaml").write_text(SHOP_TWICE % "shop")
    done = _dg(dg_project, "check", "yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_env_templates_are_declared_read_when_a_session_opens_and_never_rendered(dg_project, monkeypatch):
    folder = dg_project / "warehouse_sync" / "defs" / "shop"
    folder.mkdir()
    monkeypatch.setenv("SHOP_PASSWORD", "s3cret-Value")
    (folder / "defs.yaml").write_text(
        (SHOP_TWICE % "shop")
        .replace("env: [SHOP_DATABASE_URL, WAREHOUSE_DATABASE_URL]",
                 "env: [SHOP_DATABASE_URL, WAREHOUSE_DATABASE_URL, SHOP_PASSWORD]")
        .replace('      url: "{{ env.SHOP_DATABASE_URL }}"',
                 '      url: "{{ env.SHOP_DATABASE_URL }}"\n      password: "{{ env.SHOP_PASSWORD }}"'))
    listed = _dg(dg_project, "list", "env")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for var in ("SHOP_DATABASE_URL", "WAREHOUSE_DATABASE_URL", "SHOP_PASSWORD"):
        assert var in listed.stdout
    done = _dg(dg_project, "list", "defs", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cret-Value" not in done.stdout + done.stderr
    # The resource names the variable; its value is read when a session opens.
    shop = _project_defs(dg_project, monkeypatch).resources["shop"]
    assert "SHOP_PASSWORD" in repr(shop) and "s3cret-Value" not in repr(shop)


def test_a_failed_check_prints_a_repair_that_runs_as_printed_in_the_dg_project(dg_project, dbs):
    folder = dg_project / "warehouse_sync" / "defs" / "shop"
    folder.mkdir()
    (folder / "defs.yaml").write_text(SHOP_TWICE % "shop")
    home = dg_project / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}

    def dg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([DG, *args], cwd=dg_project, env=env, capture_output=True, text=True, timeout=300)

    assert dg("launch", "--job", "shop_sync_all").returncode == 0
    execute(dbs.target, "UPDATE shop.orders SET total = -1 WHERE id = 7")
    failed = dg("launch", "--job", "shop_verify_all")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "dg launch --job shop_reconcile_all" in output, output[-3000:]
    command = "dg launch --assets" + output.split("or `dg launch --assets", 1)[1].split("` (this table)", 1)[0]
    assert "--config-json" in command
    on_path = {**env, "PATH": f"{Path(DG).parent}{os.pathsep}{env.get('PATH', '')}"}  # `dg`, as a user has it
    repaired = subprocess.run(["bash", "-c", command], cwd=dg_project, env=on_path,
                              capture_output=True, text=True, timeout=300)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert execute(dbs.target, "SELECT total::text FROM shop.orders WHERE id = 7") == [("1.75",)]


PATTERN = SHOP_HEADER + """    - source: public.*
      target: copies.*
      exclude: [public.invoices]
  defs_state:
    management_type: LOCAL_FILESYSTEM
    refresh_if_dev: false     # only `dg utils refresh-defs-state` lists the tables
"""


def test_pattern_entries_expand_from_the_components_state_refreshed_by_dg(dg_project, dbs, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(dg_project))  # the project is not installed: its package is here
    monkeypatch.setenv("DAGSTER_HOME", str(dg_project))
    folder = dg_project / "warehouse_sync" / "defs" / "copies"
    folder.mkdir()
    (folder / "defs.yaml").write_text(PATTERN)
    done = _dg(dg_project, "list", "defs", "--json")
    assert done.returncode != 0 and "dg utils refresh-defs-state" in done.stdout + done.stderr

    done = _dg(dg_project, "utils", "refresh-defs-state")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = _dg(dg_project, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert {a["asset_key"] for a in json.loads(listed.stdout)["assets"]} >= {"orders", "shop/public/orders"}
    assert "invoices" not in {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}

    execute(dbs.source, "CREATE TABLE public.refunds (id int PRIMARY KEY)")  # a new source table
    listed = _dg(dg_project, "list", "defs", "--json")
    assert "refunds" not in {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}  # offline: the state
    assert _dg(dg_project, "utils", "refresh-defs-state").returncode == 0
    listed = _dg(dg_project, "list", "defs", "--json")
    assert "refunds" in {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
