"""Differential sync against the full copy, and against one checksum pass over the source.

    python benchmarks/differential.py [--rows 2000000] [--repeat 3] [--before-commit REV]
                                      [--modes merge,full_refresh]

Starts two throwaway servers, builds the mixed-type table of `full_refresh.py` with
`--rows` rows, syncs it once, then times in the same run, for `merge` and `full_refresh`:
  reference     SELECT sum(hashtextextended(ROW(b.*)::text, 0)) FROM bench b: one pass
                over the source, the least any verified comparison can read
  1% changed    a sync after 1% of the rows changed (a different 1% each run): full
                copy (`differential: never`, which records no bucket sums), then
                differential twice (the first after that full copy hashes both sides
                per bucket; the second, as in a steady run of differential syncs,
                has the target's bucket sums from the record the first left), with the
                WAL each wrote on the target
  newest keys   then 1% of the rows changed among the newest 2% of keys (as recent
                orders change), differential: few key blocks differ
  unchanged     a sync of the unchanged table: differential twice (the first after the
                changed run starts with the source's bucket pass, as the record holds
                bucket sums; the second with the totals, the target's from its record),
                the full copy, then differential after a no-op UPDATE of one target row
                (the record is void: both sides are hashed)
  60% changed   `auto` finds most buckets differing and falls back to the full copy
                (verified with the comparison's source sums; `full_refresh` records
                them as bucket sums, `merge` without `delete_missing` cannot, as its
                full copy is verified over the staged keys only); then a 1% change,
                differential after that fallback
and prints medians, ratios and the differential runs' stages. The target is checkpointed
before every timed run.

With `--before-commit REV`, each 1% round first times the full copy made by the code of
REV (a git worktree; for issue 9, 0ee774d: the code the issue measured) into a table of
its own on the same target, so "today's full copy" of the issue is measured beside the
current code, on one machine, in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from full_refresh import FILL, TABLE_DDL, sql  # noqa: E402
from worktree import checkout, run_python  # noqa: E402

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


def checkpointed_lsn(target_url: str) -> str:
    """Checkpoint the target (no run pays for the one before) and return its WAL position."""
    sql(target_url, "CHECKPOINT")
    return fetch(target_url, "SELECT pg_current_wal_lsn()")[0]


def wal_since(target_url: str, lsn: str) -> int:
    return int(fetch(target_url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))[0])


def timed_sync(source_url: str, target_url: str, spec: TableSpec) -> tuple[float, int, str, dict]:
    """(seconds, bytes of WAL written on the target, method, stage seconds)."""
    lsn = checkpointed_lsn(target_url)
    source = connect(source_url, readonly=True, role="source")
    target = connect(target_url, readonly=False, role="target")
    try:
        started = time.perf_counter()
        result = sync_table(spec, source, target)
        seconds = time.perf_counter() - started
    finally:
        source.close()
        target.close()
    wal = wal_since(target_url, lsn)
    stages = dict(result.stage_seconds)
    if result.differential is not None:  # the comparison's own passes, inside `compare`
        stages["compare: buckets"] = result.differential.seconds_buckets
        stages["compare: keys"] = result.differential.seconds_keys
    return seconds, wal, result.method, stages


# A sync of `bench` into `bench_before`, by the code on the path; its own seconds.
SYNC_BEFORE = """
import sys, time
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table
spec = TableSpec(name="bench", source=TableRef("public", "bench"), target=TableRef("public", "bench_before"),
                 mode=Mode(sys.argv[3]))
source = connect(sys.argv[1], readonly=True, role="source")
target = connect(sys.argv[2], readonly=False, role="target")
started = time.perf_counter()
sync_table(spec, source, target)
print(time.perf_counter() - started)
"""


def timed_before(tree: Path, source_url: str, target_url: str, mode: Mode) -> tuple[float, int]:
    """(seconds, bytes of target WAL) of the code in `tree` syncing bench into bench_before."""
    lsn = checkpointed_lsn(target_url)
    seconds = float(run_python(tree, SYNC_BEFORE, dict(os.environ), source_url, target_url, mode.value))
    return seconds, wal_since(target_url, lsn)


def change_one_percent(url: str, rows: int, round_: int) -> None:
    """Update 1% of the rows, spread over the table, differently each round."""
    sql(
        url,
        "UPDATE bench SET title = title || %s WHERE mod(id * 7919 + %s, 100) = 0",
        (f" r{round_}", round_),
    )


def change_newest(url: str, rows: int, round_: int) -> None:
    """Update 1% of the rows, all among the newest 2% of keys (as recent orders change)."""
    sql(
        url,
        "UPDATE bench SET title = title || %s WHERE id > %s AND mod(id + %s, 2) = 0",
        (f" n{round_}", rows - rows // 50, round_),
    )


def change_most(url: str, round_: int) -> None:
    """Update 60% of the rows: more than half of the key buckets differ."""
    sql(url, "UPDATE bench SET title = title || %s WHERE mod(id + %s, 10) < 6", (f" m{round_}", round_))
    sql(url, "VACUUM bench")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before-commit", help="also time the full copy of this git revision")
    parser.add_argument(
        "--modes", default="merge,full_refresh", help="which modes to time, comma-separated (default both)"
    )
    args = parser.parse_args()
    args.modes = [Mode(m) for m in args.modes.split(",")]
    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    tmp = Path(tempfile.mkdtemp(prefix="pg_sync_bench_differential_"))
    try:
        with checkout(args.before_commit, tmp) if args.before_commit else nullcontext() as before:
            run(args, source, target, before)
    finally:
        target.stop()
        source.stop()


def run(args, source, target, before: Path | None) -> None:
    sql(source.url(), TABLE_DDL.format(name="bench"))
    sql(source.url(), FILL, (args.rows,))
    sql(source.url(), "VACUUM ANALYZE bench")
    reference = [reference_pass(source.url()) for _ in range(args.repeat)]
    figures: dict[str, list[float]] = {}
    wal: dict[str, list[int]] = {}
    stages: dict[str, list[dict]] = {}
    round_ = 0

    def timed(label: str, spec: TableSpec) -> None:
        seconds, written, method, stage_seconds = timed_sync(source.url(), target.url(), spec)
        figures.setdefault(label, []).append(seconds)
        wal.setdefault(label, []).append(written)
        stages.setdefault(label, []).append(stage_seconds)
        print(f"  {label}: {seconds:.2f} s ({method})", flush=True)

    def timed_old(label: str, mode: Mode) -> None:
        seconds, written = timed_before(before, source.url(), target.url(), mode)
        figures.setdefault(label, []).append(seconds)
        wal.setdefault(label, []).append(written)
        print(f"  {label}: {seconds:.2f} s", flush=True)

    for mode in args.modes:
        spec = TableSpec(name="bench", source=BENCH, target=BENCH, mode=mode)
        timed_sync(source.url(), target.url(), TableSpec(name="bench", source=BENCH, target=BENCH))
        sql(target.url(), "VACUUM ANALYZE bench")
        if before is not None:
            timed_before(before, source.url(), target.url(), mode)  # creates bench_before
            sql(target.url(), "VACUUM ANALYZE bench_before")
        for _ in range(args.repeat):
            if before is not None:
                round_ += 1
                change_one_percent(source.url(), args.rows, round_)
                timed_old(f"{mode.value}, 1% changed, full copy by {args.before_commit}", mode)
            for path, differential in (
                ("full copy", "never"),
                ("differential, after a full copy", "auto"),
                ("differential, after a differential run", "auto"),
            ):
                round_ += 1
                change_one_percent(source.url(), args.rows, round_)
                timed(f"{mode.value}, 1% changed, {path}", replace(spec, differential=differential))
            round_ += 1
            change_newest(source.url(), args.rows, round_)
            timed(f"{mode.value}, 1% changed among the newest keys, differential", spec)
            round_ += 1
            change_most(source.url(), round_)
            timed(f"{mode.value}, 60% changed, auto (falls back to the full copy)", spec)
            round_ += 1
            change_one_percent(source.url(), args.rows, round_)
            timed(f"{mode.value}, 1% changed, differential, after that fallback", spec)
            timed(f"{mode.value}, unchanged, differential, first after a change", spec)
            timed(f"{mode.value}, unchanged, differential, again", spec)
            timed(f"{mode.value}, unchanged, full copy", replace(spec, differential="never"))
            sql(target.url(), "UPDATE bench SET title = title WHERE id = 1")  # voids the record
            timed(f"{mode.value}, unchanged, differential, no record", spec)
    ref = statistics.median(reference)
    print(f"\n{args.rows} rows, medians of {args.repeat}")
    print(f"  {'reference: one sum(hashtextextended) pass over the source':<64} {ref:7.2f} s")
    for label, runs in figures.items():
        median = statistics.median(runs)
        print(
            f"  {label:<64} {median:7.2f} s  {median / ref:5.2f}x reference  "
            f"WAL {statistics.median(wal[label]) / 1e6:8.1f} MB"
        )
    for mode in (m.value for m in args.modes):
        full = statistics.median(figures[f"{mode}, 1% changed, full copy"])
        old = f"{mode}, 1% changed, full copy by {args.before_commit}"
        afters = ("a full copy", "a differential run", "that fallback")
        runs = [f"1% changed, differential, after {after}" for after in afters]
        for run in [*runs, "1% changed among the newest keys, differential"]:
            diff = statistics.median(figures[f"{mode}, {run}"])
            line = f"  {mode}, {run}: differential / full copy = {diff / full:.2f}"
            if old in figures:
                ratio = diff / statistics.median(figures[old])
                line += f", / full copy by {args.before_commit} = {ratio:.2f}"
            print(line)
    for label, runs in stages.items():
        if "differential" in label:
            names = sorted({name for run in runs for name in run})
            parts = ", ".join(f"{n} {statistics.median(r.get(n, 0.0) for r in runs):.2f}" for n in names)
            print(f"  stages of {label}: {parts}")


if __name__ == "__main__":
    main()
