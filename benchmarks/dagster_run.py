"""What a Dagster run costs besides the rows: definition loads and steps.

    python benchmarks/dagster_run.py [--before-commit REV] [--tables 200] [--repeat 3]

On two throwaway servers seeded with the demo shop:
1. loading the definitions (`build_definitions`, in a fresh process, dagster already
   imported) for a list of 1 table and of `--tables` tables, with the source reachable
   and unreachable;
2. the demo's `sync_all` through `dagster job execute`: with the code location's default
   executor (a process per step; forked from a preloaded server since the forkserver
   change), with step processes spawned as fresh interpreters (Dagster's default), and
   with the in-process executor (`-c` run config, same CLI, same start-up), and the
   same job run in process from Python; wall time and steps.
With `--before-commit REV` the same runs are made with the code of REV (a git worktree),
in the same script, so the two are compared on one machine at one time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

from worktree import checkout, run_python  # noqa: E402

from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=3"
LOAD = """
import sys, time
import dagster  # imported before the clock starts: the cost measured is our own
from pg_sync_assets.definitions import build_definitions
started = time.perf_counter()
build_definitions(sys.argv[1])
print(time.perf_counter() - started)
"""
# What a step process pays: start Python, import everything, build the definitions.
WHOLE_LOAD = "import pg_sync_assets.definitions"
# `dagster job execute` run configs: the code location's default, then explicit choices.
EXECUTORS = {
    "default executor": "",
    "steps spawned": "execution: {config: {multiprocess: {start_method: {spawn: {}}}}}",
    "in_process executor": "execution: {config: {in_process: {}}}",
}
IN_PROCESS = """
import time
from dagster import DagsterInstance
from pg_sync_assets.definitions import defs
job = defs.resolve_job_def("sync_all")
started = time.perf_counter()
result = job.execute_in_process(instance=DagsterInstance.ephemeral())
steps = sum(1 for e in result.all_events if e.event_type_value == "STEP_START")
print(time.perf_counter() - started, steps, result.success)
"""


def _reset_target(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE nspname IN ('analytics', 'sync_staging')")
        for (schema,) in cur.fetchall():
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    conn.close()


def _table_list(path: Path, tables: int) -> Path:
    entries = "".join(
        f"  - name: t{i}\n    source: shop.orders\n    target: copies.orders_{i}\n" for i in range(tables)
    )
    path.write_text(f"tables:\n{entries}", encoding="utf-8")
    return path


def measure(tree: Path, env: dict, tables: int, repeat: int, tmp: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    for count in (1, tables):
        config = _table_list(tmp / f"list_{count}.yaml", count)
        for label, url in (("reachable", env["PG_SYNC_SOURCE_URL"]), ("unreachable", UNREACHABLE)):
            load_env = {**env, "PG_SYNC_SOURCE_URL": url, "PG_SYNC_CONFIG": str(config)}
            runs = [float(run_python(tree, LOAD, load_env, str(config))) for _ in range(repeat)]
            figures[f"build definitions, {count} tables, source {label}"] = statistics.median(runs)
            whole = []
            for _ in range(repeat):
                started = time.perf_counter()
                run_python(tree, WHOLE_LOAD + "; print('loaded')", load_env)
                whole.append(time.perf_counter() - started)
            figures[f"process load, {count} tables, source {label}"] = statistics.median(whole)
    # One untimed run creates the target tables (the code before the hardening could not
    # create them from parallel steps); the timed runs sync existing tables, the steady state.
    _reset_target(env["PG_SYNC_TARGET_URL"])
    run_python(tree, IN_PROCESS, env)
    cli: dict[str, list[float]] = {label: [] for label in EXECUTORS}
    inproc, steps = [], 0
    for _ in range(repeat):
        for label, run_config in EXECUTORS.items():
            home = Path(tempfile.mkdtemp(dir=tmp))
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            config_args = []
            if run_config:
                (home / "run.yaml").write_text(run_config)
                config_args = ["-c", str(home / "run.yaml")]
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "dagster", "job", "execute", "-m", "pg_sync_assets.definitions"]
                + ["-j", "sync_all", *config_args],
                cwd=tree,
                env={**env, "DAGSTER_HOME": str(home), "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
                timeout=900,
            )
            cli[label].append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            steps = done.stderr.count(" - STEP_START - ")
        seconds, _, ok = run_python(tree, IN_PROCESS, env).split()
        assert ok == "True"
        inproc.append(float(seconds))
    for label, runs in cli.items():
        figures[f"sync_all, dagster job execute, {label}"] = statistics.median(runs)
    figures["sync_all, in process from Python"] = statistics.median(inproc)
    figures["steps of sync_all"] = steps
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before-commit", help="also measure this git revision, for a before/after")
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    tmp = Path(tempfile.mkdtemp(prefix="pg_sync_bench_run_"))
    try:
        for server, name in ((source, "shop"), (target, "warehouse")):
            conn = psycopg2.connect(server.url())
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            conn.close()
        conn = psycopg2.connect(source.url("shop"))
        with conn, conn.cursor() as cur:
            cur.execute((REPO / "pg_sync_assets" / "demo" / "seed.sql").read_text(encoding="utf-8"))
        conn.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG_SYNC_", "DAGSTER_"))}
        env.update(
            PG_SYNC_SOURCE_URL=source.url("shop"),
            PG_SYNC_TARGET_URL=target.url("warehouse"),
            PG_SYNC_CONFIG=str(REPO / "pg_sync_assets" / "demo" / "tables.yaml"),
        )
        results = {}
        if args.before_commit:
            with checkout(args.before_commit, tmp) as tree:
                results[f"before ({args.before_commit})"] = measure(tree, env, args.tables, args.repeat, tmp)
        results["now"] = measure(REPO, env, args.tables, args.repeat, tmp)
        print(f"\nmedians of {args.repeat} runs")
        for what in results["now"]:
            row = "  ".join(f"{label}: {figures[what]:8.2f}" for label, figures in results.items())
            print(f"  {what:<50} {row}")
        now = results["now"]
        for kind in ("build definitions", "process load"):
            ratio = (
                now[f"{kind}, {args.tables} tables, source reachable"]
                / now[f"{kind}, 1 tables, source reachable"]
            )
            print(f"  {kind}: {args.tables} tables / 1 table (now): {ratio:.2f}x")
        base = now["sync_all, dagster job execute, in_process executor"]
        for label in ("default executor", "steps spawned"):
            ratio = now[f"sync_all, dagster job execute, {label}"] / base
            print(f"  sync_all CLI, {label} / CLI in_process executor (now): {ratio:.2f}x")
    finally:
        target.stop()
        source.stop()


if __name__ == "__main__":
    main()
