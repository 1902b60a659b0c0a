"""Stage timing and error wording: every failure of a run names the table, the stage
and the server it came from, and says whether the target table was left unchanged.

A dead connection is the case that needs care: psycopg2 reports it as "connection
already closed", "invalid socket" or libpq's "PGRES_COPY_OUT and no message", none of
which says which of the two servers went away. The side is found from the failing
cursor's connection, or else from which connection is closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import psycopg2

from ..errors import PgSyncError, SyncError
from .progress import Heartbeat

# What to do about the errors users meet most (SQLSTATE -> advice).
_HINTS = {
    "42501": "check grants: the source user needs SELECT on the source table (or on each copied "
    "column: leave out the others with `columns: {exclude: [...]}`); the target "
    "user needs CREATE on the target database (for the sync_staging schema) and INSERT, "
    "UPDATE, DELETE, TRUNCATE on the target table; ",
    "53200": "the server ran out of memory; lower merge_work_mem or the server's work_mem; ",
    "57014": "a statement was cancelled (statement_timeout or an operator); ",
    "55P03": "another session held a lock the run needed for longer than `lock_timeout`; ",
}
UNCHANGED = "the target table is unchanged"
COMMIT_UNKNOWN = (
    "the connection was lost while committing, so whether the commit happened is unknown: "
    "run the table's checks (or verify_all) to see what the target holds"
)


def _closed(conn) -> bool:
    return conn is not None and bool(conn.closed)


class StageTimer:
    """Times the stages of one table's run and turns their failures into SyncErrors."""

    def __init__(
        self, table: str, source_conn=None, target_conn=None, log=None, interval: float = 0.0
    ) -> None:
        """With `log` and an `interval`, a stage that runs longer logs its progress every
        `interval` seconds (`progress.py`)."""
        self.table = table
        self.seconds: dict[str, float] = {}
        self._sides = {"source": source_conn, "target": target_conn}
        self._log, self._interval = log, interval

    def _side(self, exc: psycopg2.Error) -> str | None:
        cursor = getattr(exc, "cursor", None)
        for side, conn in self._sides.items():
            if cursor is not None and conn is not None and cursor.connection is conn:
                return side
        closed = [side for side, conn in self._sides.items() if _closed(conn)]
        return closed[0] if len(closed) == 1 else None

    def error(self, stage: str, exc: psycopg2.Error) -> SyncError:
        side = self._side(exc)
        detail = (exc.pgerror or str(exc)).strip().replace("\n", " ") or type(exc).__name__
        outcome = COMMIT_UNKNOWN if stage == "commit" and side == "target" else UNCHANGED
        if side is not None and _closed(self._sides[side]):
            return SyncError(
                self.table,
                stage,
                f"the {side} server closed the connection ({detail}); it was restarted, the session "
                f"was terminated, or the network failed; {outcome}",
            )
        hint = _HINTS.get(exc.pgcode or "", "")
        return SyncError(self.table, stage, f"{detail}; {hint}{outcome}", side=side)

    @contextmanager
    def stage(self, name: str, heartbeat: bool = True) -> Iterator[None]:
        """Time the stage and word its failure; `heartbeat=False` for a stage that
        reports its own progress (the copy)."""
        started = time.monotonic()
        beat = ExitStack()
        if heartbeat and self._log is not None and self._interval > 0:
            line = partial(_running, name, self.table)
            beat.enter_context(Heartbeat(self._log, self._interval, line, self._sides["target"]))
        try:
            with beat:
                yield
        except SyncError:
            raise
        except PgSyncError as exc:  # ConfigError, SchemaMismatchError: same class, stage in front
            raise type(exc)(f"{name} failed for `{self.table}`: {exc}") from None
        except psycopg2.Error as exc:
            raise self.error(name, exc) from exc
        finally:
            self.seconds[name] = round(time.monotonic() - started, 3)


def _running(stage: str, table: str, seconds: float) -> str:
    return f"{stage} `{table}`: {seconds:.0f} s so far"
