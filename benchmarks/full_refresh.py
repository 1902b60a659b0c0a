"""Full refresh of a mixed-type table: pg_sync_assets against a hand-made psql pipe.

    python benchmarks/full_refresh.py [--rows 1000000] [--repeat 3] [--before-commit REV] [--pin]

Starts two throwaway servers (source and target), builds the source table, then times,
alternating, in the same run:
  reference  psql -c "COPY src TO STDOUT (FORMAT binary)" | psql -c "COPY dst FROM STDIN
             (FORMAT binary)" into an empty LOGGED table with the same primary key
  reference (unlogged)  the same into an UNLOGGED table with the primary key
  project    engine.sync_table(mode=full_refresh, verify=False): the copy+merge itself,
             COPY into UNLOGGED staging, then TRUNCATE + INSERT into the final table (logged,
             with its primary key), in one transaction
  project_verified  the same with verify-before-commit (the default)
  cli        `dagster asset materialize -m pg_sync_assets.definitions --select bench`, a
             fresh process as users and schedules run it: start-up, definitions, the
             verified sync and both checks, with `differential: never` (the full copy)
  cli_unchanged  the same with the default `differential: auto`: the table has not
             changed since the run before, so the run compares instead of copying
With `--before-commit REV`, `project`, `project_verified` and `cli` are also timed with
the code of REV (a git worktree; for issue 9, 0ee774d: the code the issue measured), as
`before_*`, in the same rounds. Then it prints medians, rows/s and ratios. The target is
checkpointed before every timed run (outside the timing), so no run pays for the WAL
written by the one before. Last it measures the peak RSS of the syncing process at a
quarter of --rows, at --rows and at each --rss-rows size (a fresh source table each
time, synced in a fresh child process) to show memory stays flat.

`--pin` stands in for two hosts on this one machine: each server, every process of it,
is held to a CPU of its own (the source to the first, the target to the last, with
`taskset`), so neither server's work takes CPU from the other's. The clients (psql, the
syncing Python process, Dagster) are not pinned: they run where the kernel puts them,
as on a third host sharing both. Each "host" then has one core, so parallel scans and
index builds gain nothing: it is not a measurement of separate hosts, only of the two
servers not competing with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from worktree import checkout, run_python  # noqa: E402

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.local.servers import LocalServer, exit_cleanly_on_sigterm, start_server  # noqa: E402

TABLE_DDL = """
CREATE TABLE {name} (
    id bigint PRIMARY KEY,
    updated_at timestamptz NOT NULL,
    title text,
    amount numeric(12,2),
    attrs jsonb,
    active boolean,
    scores int[]
)"""

FILL = """
INSERT INTO bench
SELECT i,
       timestamptz '2026-01-01 00:00+00' + i * interval '1 second',
       (ARRAY['삼성전자 보통주', 'order #', 'Ünïcødé text', 'plain ascii payload'])[1 + mod(i, 4)] || i,
       mod(i, 100000) / 100.0,
       jsonb_build_object('k', mod(i, 97), 'tag', 'v' || mod(i, 13),
                          'nested', jsonb_build_object('x', mod(i, 7))),
       mod(i, 2) = 0,
       ARRAY[mod(i, 10), mod(i, 100), mod(i, 1000)]::int[]
FROM generate_series(1, %s) AS i;
CREATE INDEX ON bench (updated_at);
ANALYZE bench;
"""


def pin(server: LocalServer, cpu: int) -> None:
    """Hold `server`'s postmaster and every process it has started to `cpu`; the backends
    it forks later inherit the postmaster's affinity."""
    postmaster = (server.datadir / "postmaster.pid").read_text().split()[0]
    children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True).stdout.split()
    for pid in (postmaster, *children):
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), pid], check=True, capture_output=True)


def sql(url: str, statement: str, params=None) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement, params)
    conn.close()


def build_source(source: LocalServer, rows: int) -> None:
    sql(source.url(), TABLE_DDL.format(name="bench"))
    sql(source.url(), FILL, (rows,))


def run_reference(source: LocalServer, target: LocalServer, unlogged: bool) -> float:
    """psql | psql, binary COPY, into an empty table with the same primary key."""
    sql(target.url(), "DROP TABLE IF EXISTS ref_copy")
    kind = "UNLOGGED TABLE" if unlogged else "TABLE"
    sql(target.url(), TABLE_DDL.format(name="ref_copy").replace("TABLE", kind, 1))
    psql = str(source.bindir / "psql")
    started = time.perf_counter()
    out = subprocess.Popen(
        [psql, "-X", "-q", "-d", source.url(), "-c", "COPY public.bench TO STDOUT (FORMAT binary)"],
        stdout=subprocess.PIPE,
    )
    into = subprocess.Popen(
        [psql, "-X", "-q", "-d", target.url(), "-c", "COPY public.ref_copy FROM STDIN (FORMAT binary)"],
        stdin=out.stdout,
    )
    out.stdout.close()
    if into.wait() != 0 or out.wait() != 0:
        raise RuntimeError("the reference psql pipe failed")
    return time.perf_counter() - started


def run_project(source_url: str, target_url: str, verify: bool = True) -> tuple[float, dict]:
    spec = TableSpec(
        name="bench",
        target=TableRef("public", "bench"),
        source=TableRef("public", "bench"),
        mode=Mode.FULL_REFRESH,
        verify=verify,
        differential="never",
    )  # the full copy, not a comparison of an unchanged table
    source_conn = connect(source_url, readonly=True)
    target_conn = connect(target_url, readonly=False)
    started = time.perf_counter()
    result = sync_table(spec, source_conn, target_conn)
    seconds = time.perf_counter() - started
    source_conn.close()
    target_conn.close()
    return seconds, result.stage_seconds


# The step of `run_project` by the code on the path (an earlier commit's): its seconds.
PROJECT_BEFORE = """
import sys, time
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table
bench = TableRef("public", "bench")
spec = TableSpec(name="bench", target=bench, source=bench, mode=Mode.FULL_REFRESH, verify=sys.argv[3] == "on")
source, target = connect(sys.argv[1], readonly=True), connect(sys.argv[2], readonly=False)
started = time.perf_counter()
sync_table(spec, source, target)
print(time.perf_counter() - started)
"""


def run_project_before(tree: Path, source_url: str, target_url: str, verify: bool = True) -> float:
    return float(
        run_python(tree, PROJECT_BEFORE, dict(os.environ), source_url, target_url, "on" if verify else "off")
    )


CLI_TABLES = """\
tables:
  - name: bench
    source: public.bench
    target: public.bench
    mode: full_refresh
"""


MATERIALIZE = ("dagster", "asset", "materialize", "-m", "pg_sync_assets.definitions", "--select", "bench")


def materialize_bench() -> list[str]:
    """`dagster asset materialize` of the bench table, by this interpreter."""
    return [sys.executable, "-m", *MATERIALIZE]


def run_cli(
    source_url: str, target_url: str, tmp: Path, differential: str | None, tree: Path = REPO
) -> float:
    """One `dagster asset materialize` of the bench table in a fresh process, by the code
    in `tree` (`differential` None: the code before that setting existed)."""
    config = tmp / f"tables_{differential}.yaml"
    text = CLI_TABLES if differential is None else CLI_TABLES + f"    differential: {differential}\n"
    config.write_text(text)
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PG_SYNC_CONFIG": str(config),
        "PG_SYNC_SOURCE_URL": source_url,
        "PG_SYNC_TARGET_URL": target_url,
        "PYTHONPATH": str(tree),
    }
    started = time.perf_counter()
    done = subprocess.run(materialize_bench(), env=env, capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dagster asset materialize failed:\n{done.stderr[-3000:]}")
    return seconds


def child_peak_rss(source_url: str, target_url: str) -> int:
    """Run one project sync in a fresh process; its peak RSS in MB."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", source_url, target_url],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def child(source_url: str, target_url: str) -> None:
    import resource

    run_project(source_url, target_url)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--rss-rows",
        type=int,
        nargs="*",
        default=[],
        help="more table sizes to measure the peak RSS at (e.g. 4000000)",
    )
    parser.add_argument("--before-commit", help="also time the step and the CLI with this git revision")
    parser.add_argument("--pin", action="store_true", help="hold each server to a CPU of its own (see above)")
    args = parser.parse_args()
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs two CPUs: one for each server")

    exit_cleanly_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="pg_sync_bench_"))
    source, target = start_server("source"), start_server("target")
    try:
        if args.pin:
            pin(source, 0)
            pin(target, os.cpu_count() - 1)
            print(f"source server on CPU 0, target server on CPU {os.cpu_count() - 1}")
        with checkout(args.before_commit, tmp) if args.before_commit else nullcontext() as before:
            run(args, source, target, tmp, before)
    finally:
        source.stop()
        target.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        os.sync()


def run(args, source: LocalServer, target: LocalServer, tmp: Path, before: Path | None) -> None:
    started = time.perf_counter()
    build_source(source, args.rows)
    print(f"source table: {args.rows:,} rows built in {time.perf_counter() - started:.1f} s")
    times: dict[str, list[float]] = {
        "reference": [],
        "reference_unlogged": [],
        "project": [],
        "project_verified": [],
        "cli": [],
        "cli_unchanged": [],
    }
    if before is not None:
        times.update(before_project=[], before_project_verified=[], before_cli=[])
    stages: list[dict] = []
    verified_stages: list[dict] = []
    for i in range(args.repeat):
        # A checkpoint before each timed run, so no run pays for the WAL of the one before.
        sql(target.url(), "CHECKPOINT")
        times["reference"].append(run_reference(source, target, unlogged=False))
        sql(target.url(), "CHECKPOINT")
        times["reference_unlogged"].append(run_reference(source, target, unlogged=True))
        sql(target.url(), "DROP TABLE IF EXISTS ref_copy")
        sql(target.url(), "CHECKPOINT")
        seconds, stage_seconds = run_project(source.url(), target.url(), verify=False)
        times["project"].append(seconds)
        stages.append(stage_seconds)
        sql(target.url(), "CHECKPOINT")
        seconds, stage_seconds = run_project(source.url(), target.url())
        times["project_verified"].append(seconds)
        verified_stages.append(stage_seconds)
        sql(target.url(), "CHECKPOINT")
        times["cli"].append(run_cli(source.url(), target.url(), tmp, "never"))
        sql(target.url(), "CHECKPOINT")
        times["cli_unchanged"].append(run_cli(source.url(), target.url(), tmp, "auto"))
        if before is not None:
            for verify, name in ((False, "before_project"), (True, "before_project_verified")):
                sql(target.url(), "CHECKPOINT")
                times[name].append(run_project_before(before, source.url(), target.url(), verify))
            sql(target.url(), "CHECKPOINT")
            times["before_cli"].append(run_cli(source.url(), target.url(), tmp, None, before))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    sql(target.url(), "DROP TABLE IF EXISTS ref_copy")

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians over {args.repeat} runs, {args.rows:,} rows:")
    for name, seconds in med.items():
        print(f"  {name:<20} {seconds:6.2f} s  {args.rows / seconds:>9,.0f} rows/s")
    for ref in ("reference", "reference_unlogged"):
        print(f"  ratio project / {ref:<20} {med['project'] / med[ref]:.2f}")
    for name in ("project_verified", "cli", "cli_unchanged", *(n for n in med if n.startswith("before_"))):
        print(f"  ratio {name} / reference: {med[name] / med['reference']:.2f}")
    print(f"  cost of verify-before-commit: {med['project_verified'] / med['project']:.2f}x")
    stage_median = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    print("  project stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stage_median.items()))
    verified_median = {k: statistics.median(s[k] for s in verified_stages) for k in verified_stages[0]}
    print(
        "  project_verified stages (median s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in verified_median.items())
    )

    rss = {}
    for rows in sorted({max(args.rows // 4, 1), args.rows, *args.rss_rows}):
        # Each size is a fresh source table named bench, synced in a fresh process.
        sql(source.url(), "DROP TABLE bench")
        build_source(source, rows)
        rss[rows] = child_peak_rss(source.url(), target.url())
        print(f"  peak RSS of the syncing process at {rows:,} rows: {rss[rows]} MB", flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "medians": med,
                    "stages": stage_median,
                    "rss_mb": {str(k): v for k, v in rss.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
    else:
        main()
