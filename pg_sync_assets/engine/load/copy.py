"""Binary COPY streamed from the source straight into a target staging table.

The source's `COPY (SELECT ...) TO STDOUT (FORMAT binary)` runs in a worker thread and
writes into a bounded queue of byte chunks; the target's `COPY ... FROM STDIN (FORMAT
binary)` reads that queue on the calling thread. Data stays raw bytes end to end (no
row parsing), memory stays at most `max_chunks` x `chunk_bytes` whatever the table
size, and psycopg2 releases the GIL while it waits on either socket.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2 import sql

from ..plan.introspect import Column
from ..plan.spec import TableSpec
from ..sql import source_scope
from .staging import STAGING_SCHEMA

CHUNK_BYTES = 1 << 20
MAX_CHUNKS = 16
_EOF = object()


@dataclass(frozen=True)
class CopyProgress:
    rows: int
    bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CopyResult:
    rows: int
    bytes: int
    seconds: float


class Cancelled(Exception):
    pass


class ChunkPipe:
    """File-like on both ends: the source COPY writes rows, the target COPY reads chunks.

    psycopg2 calls write() once per CopyData message, i.e. once per row (the binary
    header travels with the first row, the trailer alone), so writes - 1 = rows.
    """

    def __init__(self, on_progress: Callable[[CopyProgress], None] | None, interval: float) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_CHUNKS)
        self._buffer = bytearray()
        self._cancelled = threading.Event()
        self._on_progress = on_progress
        self._interval = interval
        self._started = time.monotonic()
        self._last_report = self._started
        self.writes = 0
        self.bytes = 0
        # Ctrl-C (or Dagster stopping the run) raised while the target COPY waited in
        # read(): psycopg2 turns it into "COPY from stdin failed ... cancelled"; the
        # interrupt itself is what the caller re-raises.
        self.interrupted: BaseException | None = None

    # source side, worker thread
    def write(self, data) -> int:
        self._buffer += data
        self.writes += 1
        if len(self._buffer) >= CHUNK_BYTES:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def _put(self, item) -> None:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise Cancelled()

    def finish(self, error: BaseException | None) -> None:
        try:
            if error is None and self._buffer:
                self._put(bytes(self._buffer))
            self._put(error if error is not None else _EOF)
        except Cancelled:
            pass

    def cancel(self) -> None:
        self._cancelled.set()

    # target side, calling thread
    def read(self, size: int = -1) -> bytes:
        try:
            item = self._queue.get()
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, a run being stopped
                self.interrupted = exc
            raise
        if item is _EOF:
            return b""
        if isinstance(item, BaseException):
            raise item
        self.bytes += len(item)
        self._report()
        return item

    def progress(self) -> CopyProgress:
        return CopyProgress(max(self.writes - 1, 0), self.bytes, time.monotonic() - self._started)

    def _report(self) -> None:
        now = time.monotonic()
        if self._on_progress is not None and now - self._last_report >= self._interval:
            self._last_report = now
            self._on_progress(self.progress())


def source_copy_statement(
    spec: TableSpec, columns: list[Column], extra: sql.Composable | None = None
) -> sql.Composed:
    """COPY of the source scope (narrowed by `extra`), user-defined types rendered as text."""
    select_list = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) if c.travels_as_text else sql.Identifier(c.name)
        for c in columns
    )
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(source_scope(spec, select_list, extra))


def staging_copy_statement(staging: str, columns: list[Column]) -> sql.Composed:
    """COPY into staging with FREEZE: rows are written frozen, so the merge's first
    scan does not rewrite every page to set hint bits. FREEZE requires the table to be
    created or truncated in the same transaction: the caller truncates it first."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(
        sql.Identifier(STAGING_SCHEMA, staging),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
    )


def copy_out_in_thread(
    cur, statement: sql.Composed, pipe: ChunkPipe, name: str
) -> tuple[threading.Thread, list[BaseException]]:
    """Start `statement` (a COPY ... TO STDOUT) on `cur` in a worker thread writing into
    `pipe`; a failure reaches the reader through the pipe and the returned list."""
    errors: list[BaseException] = []

    def produce() -> None:
        error: BaseException | None = None
        try:
            cur.copy_expert(statement, pipe, size=CHUNK_BYTES)
        except Cancelled:
            return
        except BaseException as exc:  # handed to the reading thread, re-raised there
            error = exc
            errors.append(exc)
        pipe.finish(error)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    return worker, errors


def stream_copy(
    source_cur,
    target_cur,
    copy_out: sql.Composed,
    copy_in: sql.Composed,
    on_progress: Callable[[CopyProgress], None] | None = None,
    progress_interval: float = 5.0,
) -> CopyResult:
    """Run copy_out on the source and copy_in on the target, connected by a pipe.

    Raises the source's error if the source failed (the target COPY is then aborted by
    the raised error), else the target's. The caller owns both transactions.
    """
    pipe = ChunkPipe(on_progress, progress_interval)
    started = time.monotonic()
    worker, source_error = copy_out_in_thread(source_cur, copy_out, pipe, "pg-sync-copy-source")
    try:
        target_cur.copy_expert(copy_in, pipe, size=CHUNK_BYTES)
    except BaseException:
        pipe.cancel()
        if pipe.interrupted is not None:
            source_cur.connection.cancel()  # the source's COPY would run on to its end
        worker.join()
        if pipe.interrupted is not None:
            raise pipe.interrupted from None
        if source_error:
            raise source_error[0] from None
        raise
    worker.join()
    if source_error:
        raise source_error[0]
    rows = target_cur.rowcount if target_cur.rowcount >= 0 else pipe.progress().rows
    return CopyResult(rows, pipe.bytes, time.monotonic() - started)
