"""Differential sync against the full copy, and against one checksum pass over the source.

    python benchmarks/differential.py [--rows 2000000] [--repeat 3]

Starts two throwaway servers, builds the mixed-type table of `full_refresh.py` with
`--rows` rows, syncs it once, then times in the same run, for `merge` and `full_refresh`:
  reference     SELECT sum(hashtextextended(ROW(b.*)::text, 0)) FROM bench b: one pass
                over the source, the least any verified comparison can read
  unchanged     a sync of the unchanged table: differential (the default) and full copy
  1% changed    a sync after 1% of the rows changed (a different 1% each run):
                differential and full copy, with the WAL each wrote on the target
and prints medians and ratios. The target is checkpointed before every timed run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from full_refresh import FILL, TABLE_DDL, sql  # noqa: E402

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

BENCH = TableRef("public", "bench")
REFERENCE = "SELECT sum(hashtextextended(ROW(b.*)::text, 0)) FROM bench AS b"


def fetch(url: str, statement: str, params=None):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchone()
    finally:
        conn.close()


def reference_pass(url: str) -> float:
    started = time.perf_counter()
    fetch(url, REFERENCE)
    return time.perf_counter() - started


def timed_sync(source_url: str, target_url: str, spec: TableSpec) -> tuple[float, int, str]:
    """(seconds, bytes of WAL written on the target, method)."""
    sql(target_url, "CHECKPOINT")
    lsn = fetch(target_url, "SELECT pg_current_wal_lsn()")[0]
    source = connect(source_url, readonly=True, role="source")
    target = connect(target_url, readonly=False, role="target")
    try:
        started = time.perf_counter()
        result = sync_table(spec, source, target)
        seconds = time.perf_counter() - started
    finally:
        source.close()
        target.close()
    wal = fetch(target_url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))[0]
    return seconds, int(wal), result.method


def change_one_percent(url: str, rows: int, round_: int) -> None:
    """Update 1% of the rows, spread over the table, differently each round."""
    sql(
        url,
        "UPDATE bench SET title = title || %s WHERE mod(id * 7919 + %s, 100) = 0",
        (f" r{round_}", round_),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    try:
        sql(source.url(), TABLE_DDL.format(name="bench"))
        sql(source.url(), FILL, (args.rows,))
        sql(source.url(), "VACUUM ANALYZE bench")
        reference = [reference_pass(source.url()) for _ in range(args.repeat)]
        figures: dict[str, list[float]] = {}
        wal: dict[str, list[int]] = {}
        round_ = 0
        for mode in (Mode.MERGE, Mode.FULL_REFRESH):
            spec = TableSpec(name="bench", source=BENCH, target=BENCH, mode=mode)
            timed_sync(source.url(), target.url(), TableSpec(name="bench", source=BENCH, target=BENCH))
            sql(target.url(), "VACUUM ANALYZE bench")
            for _ in range(args.repeat):
                for path, differential in (("differential", "auto"), ("full copy", "never")):
                    label = f"{mode.value}, unchanged, {path}"
                    seconds, written, method = timed_sync(
                        source.url(), target.url(), replace(spec, differential=differential)
                    )
                    figures.setdefault(label, []).append(seconds)
                    wal.setdefault(label, []).append(written)
                for path, differential in (("differential", "auto"), ("full copy", "never")):
                    round_ += 1
                    change_one_percent(source.url(), args.rows, round_)
                    label = f"{mode.value}, 1% changed, {path}"
                    seconds, written, method = timed_sync(
                        source.url(), target.url(), replace(spec, differential=differential)
                    )
                    figures.setdefault(label, []).append(seconds)
                    wal.setdefault(label, []).append(written)
                    print(f"  {label}: {seconds:.2f} s ({method})", flush=True)
        ref = statistics.median(reference)
        print(f"\n{args.rows} rows, medians of {args.repeat}")
        print(f"  {'reference: one sum(hashtextextended) pass over the source':<48} {ref:7.2f} s")
        for label, runs in figures.items():
            median = statistics.median(runs)
            print(
                f"  {label:<48} {median:7.2f} s  {median / ref:5.2f}x reference  "
                f"WAL {statistics.median(wal[label]) / 1e6:8.1f} MB"
            )
        for mode in ("merge", "full_refresh"):
            diff = statistics.median(figures[f"{mode}, 1% changed, differential"])
            full = statistics.median(figures[f"{mode}, 1% changed, full copy"])
            print(f"  {mode}, 1% changed: differential / full copy = {diff / full:.2f}")
    finally:
        target.stop()
        source.stop()


if __name__ == "__main__":
    main()
