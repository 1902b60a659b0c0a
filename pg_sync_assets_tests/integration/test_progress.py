"""Progress a person can follow: the copy against the planner's estimate (a total, a
percentage, the time left), a line each interval for every other long stage, and the
target server's own progress views read on a monitoring session."""

from __future__ import annotations

import logging
import threading

import pytest

from pg_sync_assets.engine import Mode, SyncOptions, TableRef, TableSpec, connect, sync_table
from pg_sync_assets.engine.connect import monitor_session
from pg_sync_assets.engine.load.copy import CopyProgress
from pg_sync_assets.engine.run.progress import copy_line, server_progress

ITEMS = TableRef("public", "items")
SEED = """
CREATE TABLE items (id bigint PRIMARY KEY, v text);
INSERT INTO items SELECT i, repeat('x', 50) || i FROM generate_series(1, 200000) i;
ANALYZE items;
"""


def test_copy_lines_carry_a_total_a_percentage_and_the_time_left():
    line = copy_line("public.items", CopyProgress(rows=50_000, bytes=5_000_000, seconds=2.0), 200_000)
    assert line == ("copy `public.items`: 50,000 of about 200,000 rows (25%), 25,000 rows/s, 5.0 MB; "
                    "about 6 s left")
    # an estimate that was too low: rows so far, no percentage
    assert copy_line("t", CopyProgress(300, 30, 1.0), 100) == "copy `t`: 300 rows so far, 300 rows/s, 0.0 MB"


def test_a_run_logs_every_long_stage_at_the_interval(dbs, caplog):
    dbs.src(SEED)
    spec = TableSpec(name="items", source=ITEMS, target=ITEMS, mode=Mode.MERGE, differential="never",
                     where="id > 0 AND (SELECT nap(0.6)) = ''")  # the source's sums take 0.6 s at least
    source, target = connect(dbs.source, readonly=True), connect(dbs.target, readonly=False)
    try:
        with caplog.at_level(logging.INFO, logger="progress-test"):
            sync_table(spec, source, target, options=SyncOptions(progress_interval=0.1),
                       log=logging.getLogger("progress-test"))
    finally:
        source.close()
        target.close()
    lines = [r.getMessage() for r in caplog.records]
    copies = [line for line in lines if line.startswith("copy `public.items`: ")]
    assert copies and all(" of about 200,000 rows (" in line for line in copies), lines
    waits = [line for line in lines if line.startswith(("merge `public.items`: ", "verify_source `public.items`: ",
                                                        "verify_final `public.items`: "))]
    assert waits and waits[0].endswith(" s so far"), lines


def test_the_target_servers_progress_view_is_read_on_a_session_of_its_own(dbs):
    """A COPY waiting for its data shows in pg_stat_progress_copy: the monitoring
    session reads it while the run's session is busy."""
    dbs.tgt("CREATE TABLE sink (n int)")
    target = connect(dbs.target, readonly=False)
    feed = threading.Event()

    class Slow:
        sent = False

        def read(self, size: int = -1) -> str:
            if not self.sent:
                self.sent = True
                return "".join(f"{i}\n" for i in range(100_000))  # past libpq's send buffer
            feed.wait(10)
            return ""

    worker = threading.Thread(target=lambda: target.cursor().copy_expert("COPY sink FROM STDIN", Slow()))
    pid = target.get_backend_pid()
    worker.start()
    monitor = monitor_session(target)
    try:
        text = ""
        for _ in range(100):
            with monitor.cursor() as cur:
                text = server_progress(cur, pid, 1.0)
            if "100,000 rows" in text:
                break
            threading.Event().wait(0.05)
        assert text == "; copying, 100,000 rows"
    finally:
        feed.set()
        worker.join()
        monitor.close()
        target.commit()
        target.close()
    assert monitor_session(object()) is None  # a session `connect` did not open: no figures


@pytest.mark.parametrize("interval", [0.0])
def test_no_interval_means_no_progress_thread(dbs, interval):
    dbs.src("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1)")
    source, target = connect(dbs.source, readonly=True), connect(dbs.target, readonly=False)
    try:
        before = threading.active_count()
        sync_table(TableSpec(name="items", source=ITEMS, target=ITEMS), source, target,
                   options=SyncOptions(progress_interval=interval))
        assert threading.active_count() == before
    finally:
        source.close()
        target.close()
