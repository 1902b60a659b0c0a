"""Full refresh of a mixed-type table: pg_sync_assets against a hand-made psql pipe.

    python benchmarks/full_refresh.py [--rows 1000000] [--repeat 3]

Starts two throwaway servers (source and target), builds the source table, then times,
alternating, in the same run:
  reference  psql -c "COPY src TO STDOUT (FORMAT binary)" | psql -c "COPY dst FROM STDIN
             (FORMAT binary)" into an empty LOGGED table with the same primary key
  reference (unlogged)  the same into an UNLOGGED table with the primary key
  project    engine.sync_table(mode=full_refresh, verify=False): the copy+merge itself,
             COPY into UNLOGGED staging, then TRUNCATE + INSERT into the final table (logged,
             with its primary key), in one transaction
  project_verified  the same with verify-before-commit (the default)
and prints medians, rows/s and ratios. The target is checkpointed before every timed
run (outside the timing), so no run pays for the WAL written by the one before. Then it
measures the peak RSS of the syncing process at two table sizes (each in a fresh child
process) to show memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    out = subprocess.Popen([psql, "-X", "-q", "-d", source.url(), "-c",
                            "COPY public.bench TO STDOUT (FORMAT binary)"], stdout=subprocess.PIPE)
    into = subprocess.Popen([psql, "-X", "-q", "-d", target.url(), "-c",
                             "COPY public.ref_copy FROM STDIN (FORMAT binary)"], stdin=out.stdout)
    out.stdout.close()
    if into.wait() != 0 or out.wait() != 0:
        raise RuntimeError("the reference psql pipe failed")
    return time.perf_counter() - started


def run_project(source_url: str, target_url: str, verify: bool = True) -> tuple[float, dict]:
    spec = TableSpec(name="bench", target=TableRef("public", "bench"),
                     source=TableRef("public", "bench"), mode=Mode.FULL_REFRESH, verify=verify)
    source_conn = connect(source_url, readonly=True)
    target_conn = connect(target_url, readonly=False)
    started = time.perf_counter()
    result = sync_table(spec, source_conn, target_conn)
    seconds = time.perf_counter() - started
    source_conn.close()
    target_conn.close()
    return seconds, result.stage_seconds


def child_peak_rss(source_url: str, target_url: str) -> int:
    """Run one project sync in a fresh process; its peak RSS in MB."""
    out = subprocess.run([sys.executable, __file__, "--child", source_url, target_url],
                         check=True, capture_output=True, text=True)
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
    args = parser.parse_args()

    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    try:
        started = time.perf_counter()
        build_source(source, args.rows)
        print(f"source table: {args.rows:,} rows built in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {
            "reference": [], "reference_unlogged": [], "project": [], "project_verified": []}
        stages: list[dict] = []
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
            times["project_verified"].append(run_project(source.url(), target.url())[0])
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
        sql(target.url(), "DROP TABLE IF EXISTS ref_copy")

        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\nmedians over {args.repeat} runs, {args.rows:,} rows:")
        for name, seconds in med.items():
            print(f"  {name:<20} {seconds:6.2f} s  {args.rows / seconds:>9,.0f} rows/s")
        for ref in ("reference", "reference_unlogged"):
            print(f"  ratio project / {ref:<20} {med['project'] / med[ref]:.2f}")
        print(f"  cost of verify-before-commit: {med['project_verified'] / med['project']:.2f}x")
        stage_median = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
        print("  project stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stage_median.items()))

        small = max(args.rows // 4, 1)
        sql(source.url(), "CREATE TABLE bench_small AS SELECT * FROM bench WHERE id <= %s", (small,))
        sql(source.url(), "ALTER TABLE bench RENAME TO bench_full; ALTER TABLE bench_small RENAME TO bench")
        rss_small = child_peak_rss(source.url(), target.url())
        sql(source.url(), "ALTER TABLE bench RENAME TO bench_small; ALTER TABLE bench_full RENAME TO bench")
        rss_full = child_peak_rss(source.url(), target.url())
        print(f"  peak RSS of the syncing process: {rss_small} MB at {small:,} rows, "
              f"{rss_full} MB at {args.rows:,} rows")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "rows": args.rows, "medians": med, "stages": stage_median,
                "rss_mb": {str(small): rss_small, str(args.rows): rss_full}}, indent=2))
    finally:
        source.stop()
        target.stop()
        os.sync()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
    else:
        main()
