"""`mode: cdc` against the differential re-sync and the full copy, after 1% of rows changed.

    python benchmarks/cdc.py [--rows 1000000] [--repeat 3] [--change 0.01]

Starts two throwaway servers (the source with wal_level=logical), builds the mixed-type
table of `full_refresh.py` and syncs it into three target tables once (not timed):
`bench` by `mode: cdc`, `bench_diff` by `full_refresh` (`differential: auto`, the
default) and `bench_full` by `full_refresh` with `differential: never` (the whole copy).
Then, `--repeat` times: changes `--change` of the rows (one UPDATE), and syncs the three,
in turn, each timed, each followed by the source's `pg_stat_user_tables` counters of the
table (rows read by scans and index fetches) to count what the run read. Prints medians,
the ratios to the cdc run, and the rows read per run; every target is compared with the
source at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from full_refresh import build_source, sql  # noqa: E402

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.engine.cdc.feed import Feed  # noqa: E402
from pg_sync_assets.engine.run.cdc import sync_cdc_table  # noqa: E402
from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

SOURCE = TableRef("public", "bench")
FEED = Feed.default("source")


def spec(target: str, mode: Mode, differential: str = "auto") -> TableSpec:
    return TableSpec(
        name=target, source=SOURCE, target=TableRef("public", target), mode=mode, differential=differential
    )


RUNS = {
    "cdc": spec("bench", Mode.CDC),
    "differential": spec("bench_diff", Mode.FULL_REFRESH),
    "full copy": spec("bench_full", Mode.FULL_REFRESH, "never"),
}


def rows_read(url: str) -> int:
    time.sleep(0.6)  # a closed session's counters reach the shared statistics as it exits
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables"
            " WHERE relid = 'public.bench'::regclass"
        )
        n = cur.fetchone()[0]
    conn.close()
    return n


def run(source_url: str, target_url: str, name: str) -> tuple[float, object]:
    source, target = connect(source_url, readonly=True), connect(target_url, readonly=False)
    started = time.perf_counter()
    try:
        if RUNS[name].mode is Mode.CDC:
            result = sync_cdc_table(RUNS[name], source, target, feed=FEED)
        else:
            result = sync_table(RUNS[name], source, target)
    finally:
        source.close()
        target.close()
    return time.perf_counter() - started, result


def same(source_url: str, target_url: str, table: str) -> bool:
    query = "SELECT count(*), sum(hashtext(t::text)::numeric) FROM {} t"
    a = psycopg2.connect(source_url)
    b = psycopg2.connect(target_url)
    with a.cursor() as ca, b.cursor() as cb:
        ca.execute(query.format("public.bench"))
        cb.execute(query.format(f"public.{table}"))
        equal = ca.fetchone() == cb.fetchone()
    a.close()
    b.close()
    return equal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--change", type=float, default=0.01)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    source = start_server("source", {"wal_level": "logical"})
    target = start_server("target")
    try:
        build_source(source, args.rows)
        for name in RUNS:
            run(source.url(), target.url(), name)
        times: dict[str, list[float]] = {name: [] for name in RUNS}
        reads: dict[str, list[int]] = {name: [] for name in RUNS}
        applied: list[int] = []
        every = round(1 / args.change)
        for round_ in range(args.repeat):
            sql(source.url(), "UPDATE bench SET amount = amount + 1 WHERE id %% %s = %s", (every, round_))
            for name in RUNS:
                sql(target.url(), "CHECKPOINT")
                before = rows_read(source.url())
                seconds, result = run(source.url(), target.url(), name)
                reads[name].append(rows_read(source.url()) - before)
                times[name].append(seconds)
                if name == "cdc":
                    applied.append(result.rows_copied)
                print(f"round {round_ + 1}: {name:12} {seconds:7.2f} s, source rows read {reads[name][-1]:,}")
        cdc = statistics.median(times["cdc"])
        print(f"\n{args.rows:,} rows, {args.change:.0%} changed between runs, medians of {args.repeat}:")
        print(f"{'run':14} {'seconds':>8} {'÷ cdc':>7} {'source rows read':>17}")
        for name in RUNS:
            median = statistics.median(times[name])
            print(f"{name:14} {median:8.2f} {median / cdc:7.1f} {int(statistics.median(reads[name])):17,}")
        print(f"changes applied by each cdc run: {applied}")
        for s in RUNS.values():
            verdict = "equal to the source" if same(source.url(), target.url(), s.target.name) else "DIFFERS"
            print(f"{s.target.name}: {verdict}")
    finally:
        source.stop()
        target.stop()


if __name__ == "__main__":
    main()
