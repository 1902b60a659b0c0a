"""Incremental loads: one hour of changed rows in a large table, and a day's backfill.

    python benchmarks/incremental.py [--rows 2000000] [--hour-rows 20000] [--repeat 3]

Starts two throwaway servers, builds a source table (same shape as full_refresh.py, with
an index on updated_at) whose rows spread over 100 hours, copies it whole, then changes
`--hour-rows` rows so they fall in one hour and times, in the same run:
  1. one hourly window end to end in the engine: copy + merge + verify-before-commit,
     and the asset's checks over that window (they reuse the verification);
  2. a 24-hour range in ONE pass against 24 single-hour runs of the same hours.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.full_refresh import build_source, materialize_bench, sql  # noqa: E402
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.engine.plan.window import Window  # noqa: E402
from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

BENCH = TableRef("public", "bench")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


CONFIG = """
tables:
  - source: public.bench
    mode: incremental
    incremental_column: updated_at
    partition_start: 2026-01-01-00:00
"""


def dagster_runs(source_url: str, target_url: str) -> tuple[float, float]:
    """One range run of the first day against 24 single-partition runs, in process."""
    import os
    import tempfile

    from dagster import DagsterInstance

    from pg_sync_assets.definitions import build_definitions

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tables.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        os.environ.update(
            PG_SYNC_SOURCE_URL=source_url, PG_SYNC_TARGET_URL=target_url, PG_SYNC_CONFIG=str(config)
        )
        logging.getLogger("dagster").setLevel(logging.WARNING)
        job = build_definitions().resolve_job_def("sync_bench")
        instance = DagsterInstance.ephemeral()
        tags = {
            "dagster/asset_partition_range_start": "2026-01-01-00:00",
            "dagster/asset_partition_range_end": "2026-01-01-23:00",
        }
        started = time.perf_counter()
        assert job.execute_in_process(instance=instance, tags=tags).success
        one = time.perf_counter() - started
        started = time.perf_counter()
        for h in range(24):
            assert job.execute_in_process(instance=instance, partition_key=f"2026-01-01-{h:02d}:00").success
        return one, time.perf_counter() - started


def cli_runs(source_url: str, target_url: str) -> tuple[float, float]:
    """`dagster asset materialize`: one --partition-range against 24 --partition runs."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tables.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        (Path(tmp) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "PG_SYNC_SOURCE_URL": source_url,
            "PG_SYNC_TARGET_URL": target_url,
            "PG_SYNC_CONFIG": str(config),
            "DAGSTER_HOME": tmp,
        }
        base = materialize_bench()

        def run(*args: str) -> None:
            subprocess.run(
                [*base, *args],
                env=env,
                check=True,
                capture_output=True,
                cwd=Path(__file__).resolve().parents[1],
            )

        started = time.perf_counter()
        run("--partition-range", "2026-01-01-00:00...2026-01-01-23:00")
        one = time.perf_counter() - started
        started = time.perf_counter()
        for h in range(24):
            run("--partition", f"2026-01-01-{h:02d}:00")
        return one, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--hour-rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    source, target = start_server("source"), start_server("target")
    spec = TableSpec(
        name="bench",
        target=BENCH,
        source=BENCH,
        mode=Mode.INCREMENTAL,
        incremental_column="updated_at",
        partition_start="2026-01-01-00:00",
    )
    try:
        build_source(source, args.rows)
        # spread the rows over 100 hours (the benchmark table's timestamps are 1 s apart)
        sql(
            source.url(),
            "UPDATE bench SET updated_at = timestamptz '2026-01-01 00:00+00' "
            "+ mod(id, 100) * interval '1 hour' + mod(id, 3600) * interval '1 second'",
        )
        sql(source.url(), "VACUUM ANALYZE bench")
        src, tgt = connect(source.url(), readonly=True), connect(target.url(), readonly=False)
        # the first load creates the target as an incremental table would (with its cursor index)
        sync_table(spec, src, tgt, window=Window(T0, T0 + timedelta(hours=200)))
        hour = T0 + timedelta(hours=150)  # an hour no row is in yet
        sql(
            source.url(),
            "UPDATE bench SET updated_at = %s + mod(id, 3600) * interval '1 second', "
            "title = title || ' changed' WHERE id <= %s",
            (hour, args.hour_rows),
        )

        times, result, updated = [], None, []
        for i in range(args.repeat):
            if i:  # every timed run upserts rows that really changed
                sql(source.url(), "UPDATE bench SET title = title || '!' WHERE id <= %s", (args.hour_rows,))
            started = time.perf_counter()
            result = sync_table(spec, src, tgt, window=Window(hour, hour + timedelta(hours=1)))
            times.append(time.perf_counter() - started)
            updated.append(result.updated)
        print(f"{args.rows:,} rows, medians of {args.repeat} runs\n")
        print(
            f"1. one hour ({result.rows_copied:,} changed rows) end to end: "
            f"{statistics.median(times):.2f} s (rows updated per run: {updated}; last run's stages: "
            + ", ".join(f"{k} {v:.2f}" for k, v in result.stage_seconds.items())
            + ")"
        )

        day = [T0 + timedelta(hours=h) for h in range(24)]
        ranges, singles = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            one = sync_table(spec, src, tgt, window=Window(day[0], day[-1] + timedelta(hours=1)))
            ranges.append(time.perf_counter() - started)
            started = time.perf_counter()
            for h in day:
                sync_table(spec, src, tgt, window=Window(h, h + timedelta(hours=1)))
            singles.append(time.perf_counter() - started)
        r, s = statistics.median(ranges), statistics.median(singles)
        print(
            f"2. 24-hour range, {one.rows_copied:,} rows, engine only: one pass {r:.2f} s, "
            f"24 single-hour calls {s:.2f} s, {s / r:.1f}x faster in one pass"
        )
        r, s = dagster_runs(source.url(), target.url())
        print(
            f"3. the same as Dagster runs (asset + checks, in process): one range run {r:.2f} s, "
            f"24 partition runs {s:.2f} s, {s / r:.1f}x faster in one pass"
        )
        r, s = cli_runs(source.url(), target.url())
        print(
            f"4. the same from the CLI (`dagster asset materialize`, a process a run): one "
            f"--partition-range {r:.2f} s, 24 --partition runs {s:.2f} s, {s / r:.1f}x faster in one pass"
        )
    finally:
        source.stop()
        target.stop()


if __name__ == "__main__":
    main()
