"""pg_sync_assets against the tools a user would pick instead, on one table, in one run.

    python benchmarks/peers.py [--rows 1000000] [--repeat 3]

Starts two throwaway servers and builds the mixed-type source table of `full_refresh.py`
(its `updated_at` indexed). Each round, with every target dropped first:
  first load   `psql | psql` (binary COPY into an empty table with the key), `pgcopydb
               clone` of the table (Debian package), Sling `full-refresh` (PyPI `sling`,
               its binary from `sling-linux-amd64` or `SLING_BINARY`), and
               `dagster asset materialize` of pg_sync_assets (start-up, the verified
               load, both checks)
  unchanged    Sling `incremental` (update key `updated_at`), pg_sync_assets' CLI on the
               same table (`differential: auto`)
  1% changed   1% of the rows get a new amount and `updated_at = now()`; then Sling
               `incremental`, pg_sync_assets' CLI (differential), and pg_sync_assets'
               hourly table materializing the current hour (`--partition`), which holds
               exactly the changed rows
Then each target is compared with the source (row counts) and its column types listed.
It prints medians and each path's ratio to the reference pipe or to Sling. A tool that
is not installed is skipped and said so. What catches deletes: pgcopydb and full-refresh
runs copy everything; Sling's and pg_sync_assets' incremental runs do not (a
pg_sync_assets reconcile does); pg_sync_assets' differential run does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg2  # noqa: E402
from first_load import run_pgcopydb  # noqa: E402
from full_refresh import build_source, run_reference, sql  # noqa: E402
from psycopg2 import sql as pgsql  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = [
    ("public", "ref_copy"),
    ("public", "bench"),
    ("public", "sling_bench"),
    ("ours", "bench"),
    ("ours", "bench_hourly"),
]
TABLES = """\
tables:
  - name: bench
    source: public.bench
    target: ours.bench
  - name: bench_hourly
    source: public.bench
    target: ours.bench_hourly
    mode: incremental
    incremental_column: updated_at
    partition_start: '2026-01-01-00:00'
"""


def sling_binary() -> str | None:
    given = os.environ.get("SLING_BINARY")
    if given:
        return given
    try:
        import sling_linux_amd64  # noqa: F401  (the binary ships inside this package)
    except ImportError:
        return shutil.which("sling")
    return str(Path(sling_linux_amd64.__file__).parent / "bin" / "sling-linux-amd64")


def url(server_url: str) -> str:
    return server_url + ("&" if "?" in server_url else "?") + "sslmode=disable"


def run_sling(binary: str, source_url: str, target_url: str, mode: str) -> float:
    args = [
        binary,
        "run",
        "--src-conn",
        url(source_url),
        "--src-stream",
        "public.bench",
        "--tgt-conn",
        url(target_url),
        "--tgt-object",
        "public.sling_bench",
        "--mode",
        mode,
    ]
    if mode == "incremental":
        args += ["--primary-key", "id", "--update-key", "updated_at"]
    started = time.perf_counter()
    subprocess.run(
        args, check=True, capture_output=True, env={**os.environ, "SLING_DISABLE_TELEMETRY": "true"}
    )
    return time.perf_counter() - started


def run_ours(env: dict, *args: str) -> float:
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "pg_sync_assets.definitions",
        *args,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - started


def column_types(target_url: str, schema: str, table: str) -> str:
    conn = psycopg2.connect(target_url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        )
        types = cur.fetchone()[0]
        cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(schema, table)))
        rows = cur.fetchone()[0]
    conn.close()
    return f"{rows:,} rows; {types}"


def main() -> int:
    from pg_sync_assets.local.servers import start_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sling = sling_binary()
    pgcopydb = shutil.which("pgcopydb")
    times: dict[str, list[float]] = {}
    source, target = start_server("source"), start_server("target")
    try:
        build_source(source, args.rows)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "tables.yaml").write_text(TABLES)
            home = work / "home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "PG_SYNC_CONFIG": str(work / "tables.yaml"),
                "PG_SYNC_SOURCE_URL": source.url(),
                "PG_SYNC_TARGET_URL": target.url(),
            }
            for round_ in range(args.repeat):
                for schema, table in TARGETS:
                    sql(
                        target.url(),
                        pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(schema, table)),
                    )
                sql(target.url(), "DROP TABLE IF EXISTS sync_staging.verified_tables")
                sql(target.url(), "CHECKPOINT")
                times.setdefault("first load: psql | psql", []).append(run_reference(source, target, False))
                if pgcopydb:
                    times.setdefault("first load: pgcopydb clone", []).append(
                        run_pgcopydb(source.url(), target.url(), work)
                    )
                if sling:
                    times.setdefault("first load: sling full-refresh", []).append(
                        run_sling(sling, source.url(), target.url(), "full-refresh")
                    )
                sql(target.url(), "CHECKPOINT")
                times.setdefault("first load: pg_sync_assets CLI", []).append(
                    run_ours(env, "--select", "bench")
                )
                sql(target.url(), "CREATE TABLE ours.bench_hourly (LIKE ours.bench INCLUDING ALL)")
                sql(target.url(), "INSERT INTO ours.bench_hourly SELECT * FROM ours.bench")
                sql(target.url(), "CREATE INDEX ON ours.bench_hourly (updated_at)")
                sql(target.url(), "CHECKPOINT")
                if sling:
                    times.setdefault("unchanged: sling incremental", []).append(
                        run_sling(sling, source.url(), target.url(), "incremental")
                    )
                times.setdefault("unchanged: pg_sync_assets CLI", []).append(
                    run_ours(env, "--select", "bench")
                )
                # The changed rows fall in the last complete hour: the partition an hourly
                # schedule loads next (the current hour has no partition until it ends).
                stamp = datetime.now(timezone.utc) - timedelta(hours=1)
                sql(
                    source.url(),
                    "UPDATE bench SET amount = amount + 1, updated_at = %s WHERE id %% 100 = %s",
                    (stamp, round_),
                )
                hour = stamp.strftime("%Y-%m-%d-%H:00")
                sql(target.url(), "CHECKPOINT")
                if sling:
                    times.setdefault("1% changed: sling incremental", []).append(
                        run_sling(sling, source.url(), target.url(), "incremental")
                    )
                times.setdefault("1% changed: pg_sync_assets CLI, differential", []).append(
                    run_ours(env, "--select", "bench")
                )
                times.setdefault("1% changed: pg_sync_assets CLI, hourly partition", []).append(
                    run_ours(env, "--select", "bench_hourly", "--partition", hour)
                )
            print(f"{args.rows:,} rows, medians of {args.repeat}")
            for name, values in times.items():
                print(f"  {name:<52} {statistics.median(values):7.2f} s")
            pipe = statistics.median(times["first load: psql | psql"])
            for name in [n for n in times if n.startswith("first load")]:
                print(f"  {name:<52} {statistics.median(times[name]) / pipe:5.2f}x the pipe")
            if sling:
                for stage in ("unchanged", "1% changed"):
                    base = statistics.median(times[f"{stage}: sling incremental"])
                    for name in [n for n in times if n.startswith(stage) and "pg_sync_assets" in n]:
                        print(f"  {name:<52} {statistics.median(times[name]) / base:5.2f}x Sling's")
            else:
                print("  sling: not installed (pip install sling sling-linux-amd64, or set SLING_BINARY)")
            if not pgcopydb:
                print("  pgcopydb: not installed (apt-get install pgcopydb)")
            print(f"  source: {column_types(source.url(), 'public', 'bench')}")
            for schema, table in TARGETS[1:]:
                try:
                    print(f"  target {schema}.{table}: {column_types(target.url(), schema, table)}")
                except psycopg2.Error as exc:  # a tool that did not run: say so, go on
                    print(f"  target {schema}.{table}: {type(exc).__name__}")
    finally:
        target.stop()
        source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
