"""Progress of a run's long phases, in the run's log, for the person watching it.

Every stage of a run (`StageTimer.stage`) that lasts longer than the interval logs a
line each interval: the table, the stage, the time so far, and how far the target
server says it got, where PostgreSQL keeps a progress view for the statement (building
the key: `pg_stat_progress_create_index`; a COPY: `pg_stat_progress_copy`), read on a
monitoring session of its own. MERGE and the checksums have no such view: their lines
say how long they have run. The copy reports its own rows against the planner's
estimate of the scope (`copy_line`): a total, a percentage and the time left.

The monitoring session needs the connection string of the run's target session, which
only `connect.py` holds (`monitor_session`); a session opened otherwise is reported
without the server's figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg2

from ..connect import monitor_session
from ..load.copy import CopyProgress

_PROGRESS = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = %(pid)s
UNION ALL
SELECT 'copying', bytes_processed, bytes_total, tuples_processed, 0
FROM pg_stat_progress_copy WHERE pid = %(pid)s
"""


def _left(seconds: float, fraction: float) -> str:
    if fraction <= 0.01 or fraction >= 1:
        return ""
    return f"; about {seconds / fraction - seconds:.0f} s left"


def copy_line(table: str, p: CopyProgress, expected_rows: int) -> str:
    """`copy `t`: 1,200,000 of about 5,000,000 rows (24%), 250,000 rows/s, 420.1 MB; about 15 s left`."""
    rate = f"{p.rows_per_second:,.0f} rows/s, {p.bytes / 1e6:.1f} MB"
    if expected_rows > 0 and p.rows <= expected_rows:
        fraction = p.rows / expected_rows
        return f"copy `{table}`: {p.rows:,} of about {expected_rows:,} rows ({fraction:.0%}), {rate}" + _left(
            p.seconds, fraction
        )
    return f"copy `{table}`: {p.rows:,} rows so far, {rate}"


def server_progress(cur, pid: int, seconds: float) -> str:
    """What the target server's progress views say of backend `pid`, or ''."""
    cur.execute(_PROGRESS, {"pid": pid})
    row = cur.fetchone()
    if row is None:
        return ""
    phase, blocks_done, blocks_total, tuples_done, tuples_total = row
    if blocks_total and "scanning" in phase:
        fraction = blocks_done / blocks_total
    elif tuples_total:
        fraction = tuples_done / tuples_total
    else:
        return f"; {phase}, {tuples_done:,} rows"
    return f"; {phase} {fraction:.0%}" + _left(seconds, fraction)


class Heartbeat:
    """Logs `line(seconds)` every `interval` seconds while the `with` block runs."""

    def __init__(self, log, interval: float, line: Callable[[float], str], target_conn=None) -> None:
        self._log, self._interval, self._line = log, interval, line
        self._target = target_conn
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="pg-sync-progress", daemon=True)
        self._monitor = None

    def __enter__(self) -> Heartbeat:
        self._started = time.monotonic()
        self._pid = self._target.get_backend_pid() if self._target is not None else None
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._done.wait(self._interval):
                seconds = time.monotonic() - self._started
                self._log.info("%s", self._line(seconds) + self._server(seconds))
        finally:
            if self._monitor is not None:
                self._monitor.close()

    def _server(self, seconds: float) -> str:
        if self._target is None or self._target.closed:
            return ""
        try:
            if self._monitor is None:
                self._monitor = monitor_session(self._target)
                if self._monitor is None:
                    self._target = None
                    return ""
            with self._monitor.cursor() as cur:
                return server_progress(cur, self._pid, seconds)
        except psycopg2.Error:
            self._target = None  # progress is a courtesy: a failed probe ends it, never the run
            return ""
