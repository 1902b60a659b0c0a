"""The full copy into staging with 1, 2 and 4 sessions a side (`parallel`), in one run.

    python benchmarks/parallel.py [--rows 1000000] [--repeat 3] [--workers 1,2,4]

Starts two throwaway servers, builds the mixed-type source table of `full_refresh.py`,
and times, alternating, `sync_table` of a full refresh into an existing empty target
(the staged path; `differential: never`, verified) with each number of workers, the
target dropped, created empty and checkpointed before each run. Prints medians, the
copy stage alone, and each run's ratio to one session.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from full_refresh import TABLE_DDL, build_source, sql  # noqa: E402

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.local.servers import start_server  # noqa: E402

BENCH = TableRef("public", "bench")


def run(source_url: str, target_url: str, workers: int) -> tuple[float, float]:
    sql(target_url, "DROP TABLE IF EXISTS public.bench")
    sql(target_url, TABLE_DDL.format(name="public.bench"))
    sql(target_url, "CHECKPOINT")
    spec = TableSpec(
        name="bench",
        source=BENCH,
        target=BENCH,
        mode=Mode.FULL_REFRESH,
        differential="never",
        parallel=workers,
    )
    source, target = connect(source_url, readonly=True), connect(target_url, readonly=False)
    started = time.perf_counter()
    result = sync_table(spec, source, target)
    seconds = time.perf_counter() - started
    source.close()
    target.close()
    assert result.copy_workers == workers, result.copy_workers
    return seconds, result.stage_seconds["copy"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    totals: dict[int, list[float]] = {w: [] for w in counts}
    copies: dict[int, list[float]] = {w: [] for w in counts}
    source, target = start_server("source"), start_server("target")
    try:
        build_source(source, args.rows)
        for _ in range(args.repeat):
            for workers in counts:
                total, copy = run(source.url(), target.url(), workers)
                totals[workers].append(total)
                copies[workers].append(copy)
    finally:
        target.stop()
        source.stop()
    one = statistics.median(totals[counts[0]])
    print(f"full copy of {args.rows:,} rows into staging, verified, medians of {args.repeat}")
    for workers in counts:
        total, copy = statistics.median(totals[workers]), statistics.median(copies[workers])
        ratio = total / one
        print(f"  {workers} session(s) a side: {total:6.2f} s (copy {copy:5.2f} s), {ratio:4.2f}x one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
