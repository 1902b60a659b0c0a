"""A 40-table schema synced as one pattern entry against the same tables listed one by one.

    python benchmarks/schema_pattern.py [--tables 40] [--rows 10000] [--repeat 3]

Starts two throwaway servers, builds `--tables` tables of `--rows` mixed rows in schema
`bench`, then times `dagster job execute -m pg_sync_assets.definitions -j sync_all` (a
fresh process, as users and schedules run it), alternating, in the same run:
  listed     one entry per table (`source: bench.t01` ...): one step per table
  pattern    one entry `source: bench.*` with `snapshot_group: bench`: one step, one
             source snapshot, one target transaction for all of them
Each variant writes to its own target schema; the first run of each creates its tables
and is not timed. `python -m pg_sync_assets check` lists the pattern once before.
Prints medians and the ratio.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pg_sync_assets.local.servers import exit_cleanly_on_sigterm, start_server  # noqa: E402

TABLE = """
CREATE TABLE bench.{name} (id bigint PRIMARY KEY, at timestamptz NOT NULL, title text, amount numeric(12,2),
                           attrs jsonb);
INSERT INTO bench.{name} SELECT i, timestamptz '2026-01-01 00:00+00' + i * interval '1 minute',
       '상품 ' || i, i / 100.0, jsonb_build_object('k', i % 7) FROM generate_series(1, {rows}) AS i;
"""


def _psql(server, statement: str) -> None:
    subprocess.run(
        [
            str(server.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            server.url(),
            "-c",
            statement,
        ],
        check=True,
        capture_output=True,
    )


def _lists(tmp: Path, tables: int) -> dict[str, Path]:
    listed = tmp / "listed.yaml"
    listed.write_text(
        "tables:\n"
        + "".join(
            f"  - source: bench.t{i:02d}\n    target: one.t{i:02d}\n    mode: full_refresh\n"
            for i in range(1, tables + 1)
        )
    )
    pattern = tmp / "pattern.yaml"
    pattern.write_text(
        "tables:\n  - source: bench.*\n    target: pat.*\n    mode: full_refresh\n    snapshot_group: bench\n"
    )
    return {"listed": listed, "pattern": pattern}


def _run(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=40)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="pg_sync_pattern_"))
    source, target = start_server("source"), start_server("target")
    try:
        _psql(source, "CREATE SCHEMA bench")
        for i in range(1, args.tables + 1):
            _psql(source, TABLE.format(name=f"t{i:02d}", rows=args.rows))
        lists = _lists(tmp, args.tables)
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "PG_SYNC_SOURCE_URL": source.url(),
            "PG_SYNC_TARGET_URL": target.url(),
            "PYTHONPATH": str(REPO),
        }
        _run(["pg_sync_assets", "check", "--config", str(lists["pattern"])], env)
        job = ["dagster", "job", "execute", "-m", "pg_sync_assets.definitions", "-j", "sync_all"]
        times: dict[str, list[float]] = {"listed": [], "pattern": []}
        for path in lists.values():  # creates the target tables, untimed
            _run(job, {**env, "PG_SYNC_CONFIG": str(path)})
        for i in range(args.repeat):
            for label, path in lists.items():
                times[label].append(_run(job, {**env, "PG_SYNC_CONFIG": str(path)}))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        listed, pattern = (statistics.median(times[k]) for k in ("listed", "pattern"))
        print(
            f"\n{args.tables} tables of {args.rows:,} rows, `dagster job execute -j sync_all`, "
            f"medians of {args.repeat}:"
        )
        print(f"  listed one by one ({args.tables} steps)           {listed:7.2f} s")
        print(f"  one pattern entry, one snapshot group (1 step) {pattern:7.2f} s")
        print(f"  ratio pattern / listed: {pattern / listed:.2f}")
    finally:
        target.stop()
        source.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
