"""Time per phase and peak memory of one table's sync as the table grows.

    python benchmarks/scale.py [--rows 1000000,5000000] [--change 0.01]

For each size: starts two throwaway servers, builds the mixed-type source table of
`full_refresh.py`, and syncs it (full_refresh, the defaults: verified, `differential:
auto`) four times, each in a fresh Python process whose peak RSS is read from the
kernel (`ru_maxrss`): the first load, an unchanged re-sync, a re-sync after `--change`
of the rows changed, and one more after another such change (the steady state). It
also times `psql | psql` of the table into an empty table with the key, in the same
run. It prints, per size and run, the seconds, the seconds per million rows, the
stages over 0.3 s and the peak RSS: time should grow with the rows, memory should not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from full_refresh import build_source, run_reference, sql  # noqa: E402

from pg_sync_assets.local.servers import start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYNC = """
import json, resource, sys, time
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table
bench = TableRef("public", "bench")
source, target = connect(sys.argv[1], readonly=True), connect(sys.argv[2], readonly=False)
started = time.perf_counter()
spec = TableSpec(name="bench", target=bench, source=bench, mode=Mode.FULL_REFRESH)
result = sync_table(spec, source, target)
print(json.dumps({"seconds": time.perf_counter() - started, "method": result.method,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stages": result.stage_seconds}))
"""


def sync_once(source_url: str, target_url: str) -> dict:
    import json

    done = subprocess.run(
        [sys.executable, "-c", SYNC, source_url, target_url], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def change(url: str, share: float, salt: int) -> None:
    every = round(1 / share)
    sql(url, "UPDATE bench SET amount = amount + 1 WHERE id %% %s = %s", (every, salt % every))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated table sizes")
    parser.add_argument("--change", type=float, default=0.01, help="share of rows changed between re-syncs")
    args = parser.parse_args()
    header = f"{'rows':>12} {'run':<22} {'method':<13} {'seconds':>8} {'s/M rows':>9} {'peak RSS':>9}"
    print(header + "  stages > 0.3 s")
    for rows in (int(r) for r in args.rows.split(",")):
        source, target = start_server("source"), start_server("target")
        try:
            build_source(source, rows)
            sql(target.url(), "CHECKPOINT")
            pipe = run_reference(source, target, unlogged=False)
            sql(target.url(), "DROP TABLE ref_copy")
            print(f"{rows:>12,} {'psql | psql reference':<22} {'':<13} {pipe:8.2f} {pipe / rows * 1e6:9.2f}")
            for label, before in (
                ("first load", None),
                ("unchanged", None),
                ("1% changed", 7),
                ("1% changed again", 8),
            ):
                if before is not None:
                    change(source.url(), args.change, before)
                sql(target.url(), "CHECKPOINT")
                run = sync_once(source.url(), target.url())
                stages = ", ".join(f"{k} {v:.1f}" for k, v in run["stages"].items() if v > 0.3)
                print(
                    f"{rows:>12,} {label:<22} {run['method']:<13} {run['seconds']:8.2f} "
                    f"{run['seconds'] / rows * 1e6:9.2f} {run['rss_mb']:7.0f} MB  {stages}"
                )
        finally:
            target.stop()
            source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
