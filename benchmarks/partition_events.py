"""What a long partition range costs in Dagster's event log, per partition.

    python benchmarks/partition_events.py [--hours 24,240,1200] [--repeat 3]

Starts two throwaway servers and builds a small incremental table (10 rows an hour over
the longest range), then runs ranges of each length as one pass, in process, against a
SQLite-backed instance (what `dagster dev` uses), and the same windows in the engine
alone. The difference is what Dagster spends on the run's events: a materialization,
with `dagster/partition_row_count`, per partition. Then the same runs again without the
per-hour row counts (the function that adds them replaced by a no-op), to tell what
that metadata costs from what Dagster's own per-partition events cost. It prints
seconds per partition.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.full_refresh import sql  # noqa: E402
from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table  # noqa: E402
from pg_sync_assets.engine.plan.window import Window  # noqa: E402
from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONFIG = """
tables:
  - name: events
    source: public.events
    mode: incremental
    incremental_column: at
    partition_start: 2026-01-01-00:00
"""


def key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def engine_seconds(source_url: str, target_url: str, hours: int) -> float:
    spec = TableSpec(
        name="events",
        source=TableRef("public", "events"),
        target=TableRef("public", "events"),
        mode=Mode.INCREMENTAL,
        incremental_column="at",
        partition_start="2026-01-01-00:00",
    )
    source, target = connect(source_url, readonly=True), connect(target_url, readonly=False)
    try:
        started = time.perf_counter()
        sync_table(spec, source, target, window=Window(START, START + timedelta(hours=hours)))
        return time.perf_counter() - started
    finally:
        source.close()
        target.close()


def dagster_seconds(job, instance, hours: int) -> float:
    tags = {
        "dagster/asset_partition_range_start": key(START),
        "dagster/asset_partition_range_end": key(START + timedelta(hours=hours - 1)),
    }
    started = time.perf_counter()
    assert job.execute_in_process(instance=instance, tags=tags).success
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", default="24,240,1200")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lengths = [int(h) for h in args.hours.split(",")]
    exit_cleanly_on_sigterm()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    source, target = start_server("source"), start_server("target")
    try:
        sql(source.url(), "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, v text)")
        sql(
            source.url(),
            "INSERT INTO events SELECT i, %s::timestamptz + i * interval '6 minutes', 'v' || i "
            "FROM generate_series(0, %s) AS i",
            (START, max(lengths) * 10 - 1),
        )
        engine_seconds(source.url(), target.url(), 1)  # creates the target
        with tempfile.TemporaryDirectory() as home:
            (Path(home) / "tables.yaml").write_text(CONFIG, encoding="utf-8")
            os.environ.update(
                PG_SYNC_SOURCE_URL=source.url(),
                PG_SYNC_TARGET_URL=target.url(),
                PG_SYNC_CONFIG=str(Path(home) / "tables.yaml"),
            )
            from dagster import DagsterInstance

            import pg_sync_assets.assets as assets
            from pg_sync_assets.definitions import build_definitions

            job = build_definitions().resolve_job_def("sync_events")
            with DagsterInstance.local_temp(home) as instance:
                rows = []
                for hours in lengths:
                    engine = statistics.median(
                        [engine_seconds(source.url(), target.url(), hours) for _ in range(args.repeat)]
                    )
                    run = statistics.median(
                        [dagster_seconds(job, instance, hours) for _ in range(args.repeat)]
                    )
                    with_counts = assets.record_partition_counts
                    assets.record_partition_counts = lambda *a: None
                    try:
                        bare = statistics.median(
                            [dagster_seconds(job, instance, hours) for _ in range(args.repeat)]
                        )
                    finally:
                        assets.record_partition_counts = with_counts
                    rows.append((hours, engine, run, bare))
        print(f"\nmedians of {args.repeat}; SQLite instance; ms per partition = (run - engine) / hours")
        print(f"  {'hours':>6} {'engine s':>9} {'run s':>8} {'ms/partition':>13} {'without counts s':>17}")
        for hours, engine, run, bare in rows:
            per = 1000 * (run - engine) / hours
            print(f"  {hours:>6} {engine:9.2f} {run:8.2f} {per:13.1f} {bare:17.2f}")
        (h1, e1, r1, b1), (h2, e2, r2, b2) = rows[0], rows[-1]
        slope = ((r2 - e2) - (r1 - e1)) / (h2 - h1)
        bare_slope = ((b2 - e2) - (b1 - e1)) / (h2 - h1)
        print(
            f"  marginal cost of one more partition: {1000 * slope:.1f} ms, "
            f"{1000 * bare_slope:.1f} ms of it without the per-hour row counts"
        )
    finally:
        target.stop()
        source.stop()


if __name__ == "__main__":
    main()
