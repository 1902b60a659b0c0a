"""Verification costs on a mixed-type table (default 2M rows).

    python benchmarks/verify.py [--rows 2000000] [--repeat 3]

Starts two throwaway servers, builds the source table (same shape as full_refresh.py),
copies it, then measures in the same run:
  1. checksum of the whole table on the source: pg_sync_assets' checksum (explicit column
     list, pinned settings) against count(*), one plain sum(hashtextextended(t::text, 0)),
     and the same checksum with every column hashed as its text;
  2. full refresh with verify-before-commit against the same without it;
  3. localization of 10 differing rows (changed in the target);
  4. reconcile of 1% differing rows against a full refresh that repairs the same.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.full_refresh import build_source, sql  # noqa: E402
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, reconcile_table, sync_table  # noqa: E402
from pg_sync_assets.engine.compare.localize import localize_table  # noqa: E402
from pg_sync_assets.engine.plan.plan import plan_table  # noqa: E402
from pg_sync_assets.engine.verify.verify import as_text, source_checksum  # noqa: E402
from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

BENCH = TableRef("public", "bench")


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def on(url: str, readonly: bool = True):
    return connect(url, readonly=readonly)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = TableSpec(name="bench", target=BENCH, source=BENCH, mode=Mode.MERGE)
    # The full copy: with the default `differential: auto` an unchanged table is compared, not copied.
    full = TableSpec(name="bench", target=BENCH, source=BENCH, mode=Mode.FULL_REFRESH, differential="never")
    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    try:
        build_source(source, args.rows)
        src, tgt = on(source.url()), on(target.url(), readonly=False)
        sync_table(full, src, tgt)
        print(f"{args.rows:,} rows, medians of {args.repeat} runs\n")

        cur = src.cursor()

        def query(statement: str):
            def run():
                cur.execute(statement)
                return cur.fetchone()

            return run

        t_count, _ = timed(query("SELECT count(*) FROM bench"), args.repeat)
        t_plain, _ = timed(query("SELECT sum(hashtextextended(t::text, 0)) FROM bench AS t"), args.repeat)
        columns = plan_table(cur, full).columns
        t_ours, _ = timed(lambda: source_checksum(cur, full, columns), args.repeat)
        t_text, _ = timed(lambda: source_checksum(cur, full, as_text(columns)), args.repeat)
        src.rollback()
        print("1. whole-table checksum on the source")
        print(f"   count(*)                                  {t_count:6.2f} s")
        print(f"   sum(hashtextextended(t::text, 0))         {t_plain:6.2f} s")
        print(
            f"   pg_sync_assets checksum                   {t_ours:6.2f} s  "
            f"({t_ours / t_plain:.2f}x the plain hash pass, {t_ours / t_count:.0f}x count(*))"
        )
        print(f"   the same, every column hashed as text     {t_text:6.2f} s  ({t_text / t_plain:.2f}x)")

        t_verified, r_verified = timed(lambda: sync_table(full, src, tgt), args.repeat)
        t_unverified, _ = timed(
            lambda: sync_table(TableSpec(**{**full.__dict__, "verify": False}), src, tgt), args.repeat
        )
        stages = r_verified.stage_seconds
        verify_s = sum(v for k, v in stages.items() if k.startswith("verify"))
        print("\n2. full refresh with and without verify-before-commit")
        print(
            f"   verify off {t_unverified:6.2f} s, verify on {t_verified:6.2f} s "
            f"({t_verified / t_unverified:.2f}x; verify stages {verify_s:.2f} s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in stages.items() if k.startswith("verify"))
            + ")"
        )

        changed = [1 + i * (args.rows // 10) for i in range(10)]
        sql(target.url(), "UPDATE bench SET amount = amount + 1 WHERE id = ANY(%s)", (changed,))
        t_localize, diff = timed(lambda: localize_table(spec, src, on(target.url()), args.rows), args.repeat)
        print("\n3. localization of 10 changed rows")
        print(
            f"   {t_localize:6.2f} s ({t_localize / t_ours:.2f}x one checksum pass; pass 1 "
            f"{diff.seconds_pass1:.2f} s, pass 2 {diff.seconds_pass2:.2f} s), found "
            f"{diff.changed_count} changed of {args.rows:,}, compared {diff.keys_compared:,} keys "
            f"in {diff.differing_buckets} of {diff.buckets} buckets"
        )

        sync_table(full, src, tgt)
        one_percent = args.rows // 100

        def damage() -> None:
            sql(target.url(), "UPDATE bench SET title = title || '!' WHERE id % 100 = 7")

        wal = tgt.cursor()

        def lsn() -> str:
            wal.execute("SELECT pg_current_wal_lsn()")
            return wal.fetchone()[0]

        def wal_mb(since: str) -> float:
            wal.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (since,))
            return float(wal.fetchone()[0]) / 1e6

        times_rec, times_full, wal_rec, wal_full, rewritten, stages = [], [], [], [], 0, {}
        for _ in range(args.repeat):
            damage()
            started, mark = time.perf_counter(), lsn()
            rec = reconcile_table(spec, src, tgt)
            times_rec.append(time.perf_counter() - started)
            wal_rec.append(wal_mb(mark))
            rewritten, stages = rec.inserted + rec.updated + rec.deleted, rec.stage_seconds
            damage()
            started, mark = time.perf_counter(), lsn()
            sync_table(full, src, tgt)
            times_full.append(time.perf_counter() - started)
            wal_full.append(wal_mb(mark))
        t_rec, t_full = statistics.median(times_rec), statistics.median(times_full)
        print(f"\n4. repair of 1% differing rows ({one_percent:,})")
        print(
            f"   reconcile     {t_rec:6.2f} s, rows rewritten {rewritten:,}, "
            f"target WAL {statistics.median(wal_rec):7.1f} MB  ("
            + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            + ")"
        )
        print(
            f"   full refresh  {t_full:6.2f} s, rows rewritten {args.rows:,}, "
            f"target WAL {statistics.median(wal_full):7.1f} MB"
        )
        print(
            f"   ratio reconcile / full refresh: {t_rec / t_full:.2f} in time, "
            f"{statistics.median(wal_rec) / statistics.median(wal_full):.3f} in WAL"
        )
    finally:
        source.stop()
        target.stop()


if __name__ == "__main__":
    main()
