"""Steps on other machines: `sync_all` through dagster-celery, its steps executed by a
worker process the test starts, connected to the run only through a real Redis broker
and the PostgreSQL instance, as a worker on another machine would be. The worker loads
the code location again from the table list and the environment alone."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg2.extensions import make_dsn

from pg_sync_assets.engine import TableRef
from pg_sync_assets_tests.conftest import execute
from pg_sync_assets_tests.support import instance_yaml, table_text

BIN = Path(sys.executable).parent
SEED = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, name text);
INSERT INTO shop.customers SELECT i, '고객 ' || i FROM generate_series(1, 200) i;
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int, total numeric(10,2));
INSERT INTO shop.orders SELECT i, 1 + i % 200, i * 1.5 FROM generate_series(1, 1000) i;
CREATE TABLE shop.items (order_id int, line int, sku text, PRIMARY KEY (order_id, line));
INSERT INTO shop.items SELECT o, l, 'sku' || o FROM generate_series(1, 1000) o, generate_series(1, 2) l;
"""
CONFIG = """\
tables:
  - source: shop.customers
  - source: shop.orders
    mode: merge
  - source: shop.items
"""
# The code location as a deployment with Celery writes it: the table list's definitions,
# with Dagster's celery executor instead of ours.
LOCATION = """\
import os
from dagster_celery import celery_executor
from pg_sync_assets import build_defs

defs = build_defs(os.environ["PG_SYNC_CONFIG"], executor=celery_executor)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A Redis server of the test's own, on a free port, no persistence."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        pytest.fail("redis-server is missing: scripts/test installs it (Debian package redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _home(path: Path, server_url: str, dbname: str) -> Path:
    path.mkdir()
    (path / "dagster.yaml").write_text(instance_yaml("postgres_db", server_url, dbname), encoding="utf-8")
    return path


def test_sync_all_runs_its_steps_on_a_celery_worker(servers, dbs, instance_db, redis_url, tmp_path):
    dbs.src(SEED)
    (tmp_path / "tables.yaml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "location.py").write_text(LOCATION, encoding="utf-8")
    celery = f"execution:\n  config:\n    broker: {redis_url}/0\n    backend: {redis_url}/1\n"
    (tmp_path / "celery.yaml").write_text(celery, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PG_SYNC_"))}
    base.update(PG_SYNC_CONFIG=str(tmp_path / "tables.yaml"), PG_SYNC_SOURCE_URL=dbs.source,
                PG_SYNC_TARGET_URL=dbs.target, PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}")
    # The worker and the run share the instance's database and the broker, not a directory.
    worker_env = {**base, "DAGSTER_HOME": str(_home(tmp_path / "worker_home", servers.target_url, instance_db))}
    run_env = {**base, "DAGSTER_HOME": str(_home(tmp_path / "run_home", servers.target_url, instance_db))}
    # A new instance database gets its tables once, as a deployment does, before two
    # processes would race to create them.
    migrated = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=tmp_path, env=run_env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    worker = subprocess.Popen(
        [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y",
         str(tmp_path / "celery.yaml"), "--name", "far-away", "--", "--concurrency=2"],
        cwd=tmp_path, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        done = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", "-f", str(tmp_path / "location.py"), "-j", "sync_all",
             "-c", str(tmp_path / "celery.yaml")],
            cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300,
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker_log, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker_log, _ = worker.communicate()
    assert done.returncode == 0, (done.stderr[-3000:], worker_log[-3000:])
    # The worker reported each step it ran to the instance's event log, naming itself.
    instance_url = make_dsn(servers.target_url, dbname=instance_db)
    reported = execute(instance_url, "SELECT step_key, event FROM event_logs WHERE event LIKE %s ORDER BY 1",
                       ("%in celery worker%",))
    assert [step for step, _ in reported] == ["customers", "items", "orders"], done.stderr[-3000:]
    assert all("far-away@" in event for _, event in reported)
    assert execute(instance_url, "SELECT status FROM runs") == [("SUCCESS",)]
    for name in ("customers", "orders", "items"):
        key = "order_id" if name == "items" else "id"
        assert sorted(table_text(dbs.target, TableRef("shop", name), key)) == sorted(
            table_text(dbs.source, TableRef("shop", name), key))
