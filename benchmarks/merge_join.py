"""The MERGE from staging into a large target: each staged key looked up in the target's
primary key (what `merge.py` does) against the join PostgreSQL picks by default.

    python benchmarks/merge_join.py [--rows 2000000] [--repeat 3]

Starts two throwaway servers, builds the mixed-type table of `full_refresh.py` with
`--rows` rows and syncs it (`merge`), so the target has its primary key. Then, for each
case, it fills an UNLOGGED staging table on the target and times, alternating,
`merge.merge_from_staging` (the count of matched keys and the MERGE) in a transaction
that is rolled back, so every run meets the same target:
  1% staged, all changed        an hourly window or a differential run (20,000 rows at 2M)
  10% staged, all changed
  all staged, 1% changed        a full copy of a `merge` table: every row compared
  all staged, all changed
with `merge.KEY_LOOKUP_JOIN` (key lookups; the default) and with no settings (the
planner's default join, a hash join here). The target is vacuumed and checkpointed
before every timed run. It prints medians and the ratio of the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql as sql_

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from full_refresh import FILL, TABLE_DDL, sql  # noqa: E402

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, merge, sync_table  # noqa: E402
from pg_sync_assets.engine.plan.plan import plan_table  # noqa: E402
from pg_sync_assets.engine.plan.target import read_target_shape  # noqa: E402
from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

BENCH = TableRef("public", "bench")
STAGING = "stg_merge_join"
# (label, which rows are staged, which of them change)
CASES = [
    ("1% staged, all changed", "mod(id * 7919, 100) = 0", "true"),
    ("10% staged, all changed", "mod(id * 7919, 10) = 0", "true"),
    ("all staged, 1% changed", "true", "mod(id * 7919, 100) = 0"),
    ("all staged, all changed", "true", "true"),
]
PATHS = {"key lookup (merge.py)": merge.KEY_LOOKUP_JOIN, "planner's default join": {}}


def stage(target_url: str, staged: str, changed: str) -> int:
    """Fill the staging table with the rows `staged` selects, `changed` of them altered."""
    table = sql_.Identifier("sync_staging", STAGING)
    conn = psycopg2.connect(target_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql_.SQL("DROP TABLE IF EXISTS {}").format(table))
            create = sql_.SQL("CREATE UNLOGGED TABLE {} AS SELECT * FROM bench WHERE {}")
            cur.execute(create.format(table, sql_.SQL(staged)))
            alter = sql_.SQL("UPDATE {} SET title = title || ' m' WHERE {}")
            cur.execute(alter.format(table, sql_.SQL(changed)))
            cur.execute(sql_.SQL("VACUUM ANALYZE {}").format(table))
            cur.execute(sql_.SQL("SELECT count(*) FROM {}").format(table))
            return cur.fetchone()[0]
    finally:
        conn.close()


def timed_merge(target_url: str, plan, settings: dict[str, str], rows: int) -> tuple[float, int]:
    """(seconds, rows written) of merge_from_staging, rolled back."""
    sql(target_url, "VACUUM bench")
    sql(target_url, "CHECKPOINT")
    merge.KEY_LOOKUP_JOIN = settings
    conn = psycopg2.connect(target_url)
    try:
        with conn.cursor() as cur:
            shape = read_target_shape(cur, BENCH)
            started = time.perf_counter()
            key = plan.key_columns()
            counts = merge.merge_from_staging(cur, BENCH, STAGING, plan.columns, key, rows, shape)
            seconds = time.perf_counter() - started
        conn.rollback()
    finally:
        conn.close()
    return seconds, counts.inserted + counts.updated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    key_lookup = dict(merge.KEY_LOOKUP_JOIN)
    try:
        sql(source.url(), TABLE_DDL.format(name="bench"))
        sql(source.url(), FILL, (args.rows,))
        spec = TableSpec(name="bench", source=BENCH, target=BENCH, mode=Mode.MERGE)
        src = connect(source.url(), readonly=True, role="source")
        tgt = connect(target.url(), readonly=False, role="target")
        try:
            sync_table(spec, src, tgt)
            with src.cursor() as cur:
                plan = plan_table(cur, spec)
        finally:
            src.close()
            tgt.close()
        sql(target.url(), "VACUUM ANALYZE bench")
        print(f"{args.rows} rows in the target, medians of {args.repeat}")
        for label, staged, changed in CASES:
            rows = stage(target.url(), staged, changed)
            runs: dict[str, list[float]] = {name: [] for name in PATHS}
            written = 0
            for _ in range(args.repeat):
                for name, settings in PATHS.items():
                    seconds, written = timed_merge(target.url(), plan, dict(settings), rows)
                    runs[name].append(seconds)
            lookup, default = (statistics.median(r) for r in runs.values())
            print(
                f"  {label:<26} {rows:>9} staged, {written:>9} written: key lookup {lookup:6.2f} s, "
                f"default join {default:6.2f} s, key lookup / default {lookup / default:.2f}",
                flush=True,
            )
    finally:
        merge.KEY_LOOKUP_JOIN = key_lookup
        target.stop()
        source.stop()


if __name__ == "__main__":
    main()
