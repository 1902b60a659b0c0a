"""`python -m pg_sync_assets.demo [start|env|stop]`: the whole thing on throwaway servers.

`start` (the default) starts a source and a target PostgreSQL server, seeds the source
with the demo tables, runs the `sync_all` job (every batch table and its checks), the
`cdc_source` job (the first copy of the cdc table) and the hourly table's whole history
(every hour since its first partition) as one range, prints a summary, and leaves the
servers up so `dg dev` and the CLI can use the same setup. The Dagster instance
(`.demo/dagster_home`) keeps its runs, event log and schedules in a `dagster` database on
the demo's target server, through dagster-postgres, as a deployment does.
`env` prints the `export` lines that point a shell at it; `stop` stops the servers.
`PG_SYNC_DEMO_DIR` moves `.demo` elsewhere (the tests use it to leave yours alone).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
from psycopg2 import sql

from pg_sync_assets.config import DEMO_CONFIG
from pg_sync_assets.local.servers import LocalServer, find_bindir, start_server

STATE_DIR = Path(os.environ.get("PG_SYNC_DEMO_DIR") or ".demo")
DEMO_START = "2026-11-01-00:00"  # `partition_start` of the demo's hourly table
STATE_FILE = STATE_DIR / "servers.json"
SEED = Path(__file__).parent / "seed.sql"


def stop() -> None:
    if not STATE_FILE.exists():
        print("no demo servers are running")
        return
    for entry in json.loads(STATE_FILE.read_text())["servers"]:
        LocalServer(entry["name"], entry["port"], Path(entry["root"]), find_bindir()).stop()
    STATE_FILE.unlink()
    print("demo servers stopped")


def _create_db(server: LocalServer, name: str) -> str:
    conn = psycopg2.connect(server.url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    return server.url(name)


def start() -> int:
    stop() if STATE_FILE.exists() else None
    STATE_DIR.mkdir(exist_ok=True)
    # The source decodes its WAL for the `cdc` table (logical replication).
    source, target = start_server("source", {"wal_level": "logical"}), start_server("target")
    servers = [{"name": s.name, "port": s.port, "root": str(s.root)} for s in (source, target)]
    STATE_FILE.write_text(json.dumps({"servers": servers}))
    source_url, target_url = _create_db(source, "shop"), _create_db(target, "warehouse")
    _create_db(target, "dagster")
    conn = psycopg2.connect(source_url)
    with conn, conn.cursor() as cur:
        cur.execute(SEED.read_text(encoding="utf-8"))
    conn.close()

    home = (STATE_DIR / "dagster_home").resolve()
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml(target.port))
    environment = {
        "PG_SYNC_CONFIG": str(DEMO_CONFIG),
        "PG_SYNC_SOURCE_URL": source_url,
        "PG_SYNC_TARGET_URL": target_url,
        "DAGSTER_HOME": str(home),
    }
    STATE_FILE.write_text(json.dumps({"servers": servers, "environment": environment}))
    os.environ.update(environment)
    from dagster import DagsterInstance

    from pg_sync_assets.definitions import build_definitions

    defs = build_definitions()
    instance = DagsterInstance.get()
    results = [
        defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
        for job in ("sync_all", "cdc_source")  # the batch tables; the cdc table's first copy
    ]
    # The hourly table: every hour from its first partition to the last complete one (the
    # seed spreads the orders over them), as one range in one pass.
    last = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")
    tags = {"dagster/asset_partition_range_start": DEMO_START, "dagster/asset_partition_range_end": last}
    results.append(
        defs.resolve_job_def("sync_orders_hourly").execute_in_process(
            instance=instance, raise_on_error=False, tags=tags
        )
    )
    failed = _print_summary(results, f"every hour from {DEMO_START} to {last}, one pass")
    print("""
The demo servers keep running. To use them from a shell (the README's tour):

  source .venv/bin/activate           # puts `dagster` and `dg` on PATH
  eval "$(bash scripts/demo env)"     # PG_SYNC_CONFIG, PG_SYNC_SOURCE_URL, PG_SYNC_TARGET_URL, DAGSTER_HOME
  dg dev                              # then open http://127.0.0.1:3000

Stop the servers with: bash scripts/demo stop""")
    return 1 if failed or not all(r.success for r in results) else 0


def instance_yaml(port: int) -> str:
    """The demo instance's dagster.yaml: storage in the target server's `dagster` database."""
    return (
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n    postgres_db:\n"
        f"      hostname: 127.0.0.1\n      port: {port}\n      username: postgres\n      db_name: dagster\n"
    )


def env() -> int:
    """`export` lines for the running demo, for `eval "$(bash scripts/demo env)"`."""
    if not STATE_FILE.exists():
        print("no demo is running; start it with: bash scripts/demo", file=sys.stderr)
        return 1
    for name, value in json.loads(STATE_FILE.read_text()).get("environment", {}).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _print_summary(results, range_text: str) -> int:
    print(f"\n{'asset':<40} {'rows':>8} {'copied':>8}  {'changes':<32} checks")
    failed = sum(_print_run(result) for result in results)
    print(f"(orders_hourly: {range_text})")
    return failed


def _changes(md: dict) -> str:
    """The run's effect on the final table, as the materialization labels it."""
    md = {k.removeprefix("run_"): v for k, v in md.items()}
    if "rows_written" in md:
        return f"rewritten {md['rows_written']} (replaced {md['rows_replaced']})"
    return f"+{md['rows_inserted']} ~{md['rows_updated']} -{md['rows_deleted']}"


def _print_run(result) -> int:
    checks: dict[str, list[str]] = {}
    for evaluation in result.get_asset_check_evaluations():
        mark = "ok" if evaluation.passed else "FAILED"
        checks.setdefault(evaluation.asset_key.to_user_string(), []).append(f"{evaluation.check_name} {mark}")
    failed = sum(1 for e in result.get_asset_check_evaluations() if not e.passed)
    printed: set[str] = set()
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        md = {k: v.value for k, v in mat.metadata.items()}
        name = mat.asset_key.to_user_string()
        if name in printed:  # a range run has one event per partition: print the run once
            continue
        printed.add(name)
        label = f"{name} (range)" if mat.partition else name
        rows = md.get("dagster/row_count", md.get("target_table_rows"))
        copied = md.get("rows_copied", md.get("run_rows_copied"))
        print(f"{label:<40} {rows:>8} {copied:>8}  {_changes(md):<32} {', '.join(checks.get(name, []))}")
    for event in result.all_events:
        if event.is_step_failure:
            print(f"FAILED step {event.step_key}: {event.step_failure_data.error.message.strip()}")
            failed += 1
    return failed


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "start"
    if command == "stop":
        stop()
        return 0
    if command == "start":
        return start()
    if command == "env":
        return env()
    print("usage: python -m pg_sync_assets.demo [start|env|stop]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
