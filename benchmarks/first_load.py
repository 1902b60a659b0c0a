"""A first load (the target table does not exist yet) against the tools a user would
pick instead, in one run.

    python benchmarks/first_load.py [--rows 1000000] [--repeat 3] [--before-commit REV]

Starts two throwaway servers, builds the mixed-type source table of `full_refresh.py`,
then times, alternating, each round dropping whatever the path created:
  reference   psql binary COPY | psql binary COPY into an empty logged table with the key
  pgcopydb    `pgcopydb clone` of the one table (schema, data, index), when installed
  project     engine.sync_table, full_refresh: a first load, verified before commit
  project_noverify  the same with `verify: false`
  cli         `dagster asset materialize -m pg_sync_assets.definitions --select bench` in a
              fresh process, as a user or a schedule runs it: start-up, the verified first
              load and both checks
With `--before-commit REV`, `project` is also timed with the code of REV (a git
worktree), as `before`: the staged first load, for the figure beside the direct one.
It prints medians, each path's ratio to the reference, and the stages of `project`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from full_refresh import build_source, run_cli, run_reference, sql  # noqa: E402
from worktree import checkout, run_python  # noqa: E402

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.local.servers import start_server  # noqa: E402

BENCH = TableRef("public", "bench")
FIRST_LOAD_BEFORE = """
import sys, time
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table
bench = TableRef("public", "bench")
spec = TableSpec(name="bench", target=bench, source=bench, mode=Mode.FULL_REFRESH)
source, target = connect(sys.argv[1], readonly=True), connect(sys.argv[2], readonly=False)
started = time.perf_counter()
sync_table(spec, source, target)
print(time.perf_counter() - started)
"""


def drop_target(url: str) -> None:
    sql(url, "DROP TABLE IF EXISTS public.bench")
    sql(url, "CHECKPOINT")


def run_project(source_url: str, target_url: str, verify: bool) -> tuple[float, dict]:
    drop_target(target_url)
    spec = TableSpec(name="bench", target=BENCH, source=BENCH, mode=Mode.FULL_REFRESH, verify=verify)
    source, target = connect(source_url, readonly=True), connect(target_url, readonly=False)
    started = time.perf_counter()
    result = sync_table(spec, source, target)
    seconds = time.perf_counter() - started
    source.close()
    target.close()
    assert result.method == "first_load", result.method
    return seconds, result.stage_seconds


def run_pgcopydb(source_url: str, target_url: str, work: Path) -> float:
    drop_target(target_url)
    filters = work / "filters.ini"
    filters.write_text("[include-only-table]\npublic.bench\n")
    shutil.rmtree(work / "pgcopydb", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [
            "pgcopydb",
            "clone",
            "--source",
            source_url,
            "--target",
            target_url,
            "--filters",
            str(filters),
            "--dir",
            str(work / "pgcopydb"),
            "--no-owner",
            "--no-acl",
            "--skip-extensions",
            "--skip-db-properties",
            "--table-jobs",
            "2",
            "--index-jobs",
            "2",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before-commit", help="also time the first load of this git revision")
    args = parser.parse_args()
    source, target = start_server("source"), start_server("target")
    times: dict[str, list[float]] = {}
    stages: list[dict] = []
    try:
        build_source(source, args.rows)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            tree_cm = checkout(args.before_commit, work) if args.before_commit else None
            tree = tree_cm.__enter__() if tree_cm else None
            try:
                for _ in range(args.repeat):
                    sql(target.url(), "CHECKPOINT")
                    times.setdefault("reference", []).append(run_reference(source, target, unlogged=False))
                    sql(target.url(), "DROP TABLE IF EXISTS ref_copy")
                    if shutil.which("pgcopydb"):
                        times.setdefault("pgcopydb", []).append(
                            run_pgcopydb(source.url(), target.url(), work)
                        )
                    seconds, stage = run_project(source.url(), target.url(), verify=True)
                    times.setdefault("project", []).append(seconds)
                    stages.append(stage)
                    seconds, _ = run_project(source.url(), target.url(), verify=False)
                    times.setdefault("project_noverify", []).append(seconds)
                    drop_target(target.url())
                    sql(target.url(), "CHECKPOINT")
                    times.setdefault("cli", []).append(run_cli(source.url(), target.url(), work, "auto"))
                    if tree is not None:
                        drop_target(target.url())
                        out = run_python(
                            tree, FIRST_LOAD_BEFORE, dict(os.environ), source.url(), target.url()
                        )
                        times.setdefault("before", []).append(float(out))
            finally:
                if tree_cm:
                    tree_cm.__exit__(None, None, None)
    finally:
        target.stop()
        source.stop()
    reference = statistics.median(times["reference"])
    print(f"first load of {args.rows:,} rows, medians of {args.repeat}")
    for name, values in times.items():
        median = statistics.median(values)
        rate = args.rows / median
        print(f"  {name:<18} {median:7.2f} s  {rate:10,.0f} rows/s  {median / reference:5.2f}x reference")
    keys = sorted({k for s in stages for k in s})
    print(
        "  stages of project (median s): "
        + ", ".join(f"{k} {statistics.median(s.get(k, 0.0) for s in stages):.2f}" for k in keys)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
