"""Parallel copy of one table under one snapshot (`parallel: N | auto`).

The run's source transaction exports its snapshot (`pg_export_snapshot`); each of N
workers opens a source session that imports it (`SET TRANSACTION SNAPSHOT`), so every
worker reads exactly the rows the plan, the other workers and the verification read,
and a target session of its own, and copies a disjoint range of the table's pages
(`ctid` block ranges, a TID Range Scan: keyed or not, any plain table) into the staging
table, committing it there. The merge and the verification then go on as for one
stream. A worker that fails cancels the others, and the run fails as a serial copy would
(the staging table is dropped; the final table was never touched).

Only plain tables are split (a view, a partitioned table or a `query` has no page range
of its own: they copy in one stream), and only the staged path: a first load creates its
table inside the final transaction, where no other session can write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from psycopg2 import sql

from ..connect import sibling_session
from ..plan.spec import TableSpec
from ..run.workers import Workers
from .copy import CopyProgress, CopyResult, source_copy_statement, stream_copy
from .staging import STAGING_SCHEMA

AUTO = 0  # `parallel: auto`
ROWS_PER_WORKER = 1_000_000  # `auto`: a table under this many rows copies in one stream
MAX_AUTO_WORKERS = 4

_PAGES = """
SELECT c.relkind::text, pg_relation_size(c.oid) / current_setting('block_size')::int,
       current_setting('max_parallel_workers')::int
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s
"""


def copy_workers(scur, spec: TableSpec, estimated_rows: int) -> tuple[int, int]:
    """(workers, pages of the table) for `spec.parallel`, in the run's snapshot: 1 where
    the source cannot be split, or `auto` finds it small."""
    if spec.parallel == 1 or spec.source is None:
        return 1, 0
    scur.execute(_PAGES, (spec.source.schema, spec.source.name))
    row = scur.fetchone()
    if row is None or row[0] != "r" or row[1] < 2:
        return 1, 0
    kind, pages, server_workers = row
    wanted = spec.parallel
    if wanted == AUTO:
        wanted = min(MAX_AUTO_WORKERS, 1 + estimated_rows // ROWS_PER_WORKER, server_workers + 1)
    return max(1, min(wanted, pages)), pages


def page_ranges(pages: int, workers: int) -> list[sql.Composable]:
    """`ctid` conditions splitting pages 0..pages into `workers` runs; the last one open
    (a row visible to the snapshot lies in a page that existed when it was taken)."""
    bounds = [pages * i // workers for i in range(workers)]
    conditions = []
    for i, start in enumerate(bounds):
        low = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({start},0)"))
        if i + 1 < workers:
            high = sql.SQL("ctid < {}::tid").format(sql.Literal(f"({bounds[i + 1]},0)"))
            conditions.append(sql.SQL("{} AND {}").format(low, high))
        else:
            conditions.append(low)
    return conditions


class _Totals:
    """The workers' progress, added up and reported at most every `interval` seconds."""

    def __init__(self, workers: int, report: Callable[[CopyProgress], None] | None, interval: float) -> None:
        self._rows, self._bytes = [0] * workers, [0] * workers
        self._report, self._interval = report, interval
        self._lock = threading.Lock()
        self._last = 0.0

    def of(self, worker: int) -> Callable[[CopyProgress], None]:
        def update(p: CopyProgress) -> None:
            with self._lock:
                self._rows[worker], self._bytes[worker] = p.rows, p.bytes
                if self._report is not None and p.seconds - self._last >= self._interval:
                    self._last = p.seconds
                    self._report(CopyProgress(sum(self._rows), sum(self._bytes), p.seconds))

        return update


def parallel_copy(run, workers: int, pages: int, report: Callable[[CopyProgress], None] | None) -> CopyResult:
    """Copy the run's source scope into its staging table with `workers` sessions a side,
    all in the snapshot of the run's open source transaction; committed on the target."""
    scur, tcur, spec, copied, staging = run.scur, run.tcur, run.spec, run.copied, run.staging
    interval = run.options.progress_interval
    scur.execute("SELECT pg_export_snapshot()")
    snapshot = scur.fetchone()[0]
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier(STAGING_SCHEMA, staging), sql.SQL(", ").join(sql.Identifier(c.name) for c in copied)
    )
    totals = _Totals(workers, report, interval)
    results: list[CopyResult | None] = [None] * workers
    pool = Workers()

    def work(i: int, condition: sql.Composable) -> None:
        source = pool.open(lambda: sibling_session(scur.connection, readonly=True))
        target = pool.open(lambda: sibling_session(tcur.connection, readonly=False))
        source.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
        target.autocommit = False
        with source.cursor() as wscur, target.cursor() as wtcur:
            wscur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            statement = source_copy_statement(spec, copied, condition)
            results[i] = stream_copy(wscur, wtcur, statement, copy_in, totals.of(i), interval)
        target.commit()
        source.rollback()

    jobs = [lambda i=i, c=c: work(i, c) for i, c in enumerate(page_ranges(pages, workers))]
    pool.run(jobs, "pg-sync-copy")
    done = [r for r in results if r is not None]
    return CopyResult(sum(r.rows for r in done), sum(r.bytes for r in done), max(r.seconds for r in done))
