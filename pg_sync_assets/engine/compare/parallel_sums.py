"""Pass 1 of a comparison (the bucket sums of one side) by several sessions under one
snapshot, for `parallel: N | auto`, as `load/parallel_copy.py` splits a copy.

The side's open transaction exports its snapshot; each worker session imports it and
sums the buckets of a disjoint range of the table's pages (`ctid` ranges); the workers'
sums are added into one `BucketSums` as their rows arrive (one set of arrays, whatever
the number of workers). Every worker reads exactly the rows one session would have read,
so the sums are the same; only plain tables are split.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from psycopg2 import sql

from ..connect import sibling_session
from ..load.parallel_copy import copy_workers, page_ranges
from ..plan.introspect import Column
from ..run.workers import Workers
from ..sql import pin_text_settings
from ..verify.buckets import Bucketing, BucketSums

ROWS_PER_BUCKET = 16  # `localize.bucket_count`: about 16 rows a bucket


def sum_workers(cur, spec, side: str, n: int) -> tuple[int, int]:
    """(sessions, pages) for the side's pass 1: `spec.parallel`, as a copy would use it."""
    if spec.parallel == 1:
        return 1, 0
    table = spec.source if side == "source" else spec.target
    if table is None:
        return 1, 0
    return copy_workers(cur, replace(spec, source=table), n * ROWS_PER_BUCKET)


class _Adder:
    """Text COPY rows `bucket, count, checksum` added into shared sums, a chunk at a time
    under a lock (workers' rows interleave)."""

    def __init__(self, sums: BucketSums, lock: threading.Lock) -> None:
        self.sums, self.lock, self._rest = sums, lock, b""

    def write(self, data) -> int:
        chunk = self._rest + (data.encode() if isinstance(data, str) else bytes(data))
        *lines, self._rest = chunk.split(b"\n")
        sums = self.sums
        with self.lock:
            for line in lines:
                bucket, rows, total = line.split(b"\t")
                b = int(bucket)
                before = (sums.high[b] << 64) + sums.low[b]
                sums.set(b, sums.rows[b] + int(rows), before + int(total))
        return len(data)


def parallel_bucket_sums(
    conn,
    spec,
    bucketing: Bucketing,
    columns: Sequence[Column],
    side: str,
    n: int,
    workers: int,
    pages: int,
    inner,
    work_mem: str,
) -> BucketSums:
    """`localize.bucket_sums` by `workers` sessions, each over a range of the pages;
    `inner(scope)` builds the side's (bucket, key, hash, parts) query for a scope."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_export_snapshot()")
        snapshot = cur.fetchone()[0]
    sums = BucketSums(bucketing, n)
    lock = threading.Lock()
    pool = Workers()

    def work(condition: sql.Composable) -> None:
        session = pool.open(lambda: sibling_session(conn, readonly=True, purpose="compare worker"))
        session.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
        with session.cursor() as cur:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            pin_text_settings(cur)
            cur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
            window = condition
            if spec.window is not None:
                window = sql.SQL("({}) AND ({})").format(spec.window, condition)
            statement = sql.SQL("COPY (SELECT b, count(*), sum(h) FROM ({}) AS x GROUP BY b) TO STDOUT")
            cur.copy_expert(statement.format(inner(replace(spec, window=window))), _Adder(sums, lock))
        session.rollback()

    pool.run([lambda c=c: work(c) for c in page_ranges(pages, workers)], "pg-sync-sums")
    return sums
