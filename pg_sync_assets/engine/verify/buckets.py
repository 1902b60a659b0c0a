"""Key buckets and their sums (`localize`, `record`), and how the verified record's
bucket sums travel in and out of the target: as a stream.

The record keeps a table's bucket sums as one `bytea` value (`BucketSums.pack`: 28
bytes a non-empty bucket, up to 28 MB at 2^20 buckets), stored uncompressed. As a query
parameter or result, psycopg2 would carry it as hex text, and libpq and Python would each
hold a whole copy or two of it: at a million buckets, over 100 MB for a value the run
reads a slice at a time. So it travels by binary COPY through bounded chunks: written as
one field streamed into a temporary table the record's upsert then reads, and read back
as rows of about 1 MB of whole buckets (libpq holds one message, a row, at a time),
unpacked into `BucketSums` as they arrive.
"""

from __future__ import annotations

import json
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain

from psycopg2 import sql

from .verify import ScopeChecksum

KEY_TEXT = "key text"  # a hash of the key's text: any key
INTEGER_BLOCKS = "integer blocks"  # blocks of consecutive values: a single integer key


@dataclass(frozen=True)
class Bucketing:
    """Which bucket a row falls in: by its `key` columns, spread as `by` says (`localize`)."""

    key: tuple[str, ...]
    by: str = KEY_TEXT

    @property
    def stored(self) -> str:
        """As the record names it (a key-text bucketing as records written before `by`)."""
        if self.by == KEY_TEXT:
            return json.dumps(list(self.key))
        return json.dumps({"by": self.by, "key": list(self.key)})


class BucketSums:
    """Per bucket (`localize`): count and checksum, over `count` buckets of `bucketing`.

    Held as three machine arrays indexed by bucket (the count, 32 bits, and the checksum's
    high signed and low unsigned 64 bits), 20 bytes a bucket whatever the table: at most
    20 MB at the cap of 2^20 buckets, where a dict of Python ints took about 10 times that."""

    def __init__(self, bucketing: Bucketing, count: int) -> None:
        self.bucketing, self.count = bucketing, count
        # Zeroed by repetition: no temporary buffer of the arrays' size.
        self.rows = array("i", [0]) * count
        self.high = array("q", [0]) * count
        self.low = array("Q", [0]) * count

    def set(self, bucket: int, rows: int, total: int) -> None:
        self.rows[bucket], self.high[bucket], self.low[bucket] = rows, total >> 64, total & _LOW

    @classmethod
    def from_dict(cls, bucketing: Bucketing, count: int, sums: dict[int, tuple[int, int]]) -> BucketSums:
        made = cls(bucketing, count)
        for bucket, (rows, total) in sums.items():
            made.set(bucket, rows, total)
        return made

    def as_dict(self) -> dict[int, tuple[int, int]]:
        """The non-empty buckets (for tests and small tables)."""
        rows = zip(self.rows, self.high, self.low, strict=True)
        return {b: (n, (h << 64) + lo) for b, (n, h, lo) in enumerate(rows) if n}

    @property
    def total(self) -> ScopeChecksum:
        """The count and checksum of every bucket together."""
        return ScopeChecksum(sum(self.rows), Decimal((sum(self.high) << 64) + sum(self.low)))

    def compare(self, other: BucketSums) -> tuple[int, list[int]]:
        """(buckets with rows on either side, the buckets whose count or checksum differ).
        Equal stretches of buckets are skipped at C speed, slice by slice."""
        filled, differing = 0, []
        for start in range(0, self.count, _STRETCH):
            end = min(start + _STRETCH, self.count)
            rows, other_rows = self.rows[start:end], other.rows[start:end]
            if (
                rows == other_rows
                and self.high[start:end] == other.high[start:end]
                and (self.low[start:end] == other.low[start:end])
            ):
                filled += (end - start) - rows.count(0)
                continue
            for b in range(start, end):
                if self.rows[b] or other.rows[b]:
                    filled += 1
                    if (self.rows[b], self.high[b], self.low[b]) != (
                        other.rows[b],
                        other.high[b],
                        other.low[b],
                    ):
                        differing.append(b)
        return filled, differing

    def pack(self) -> bytes:
        """Per non-empty bucket in order: its number, count and checksum (4, 8 and 16 bytes,
        big-endian; the checksum as its high signed and low unsigned 8 bytes). What the
        record stores; `stage_bucket_sums` sends it a slice at a time."""
        return b"".join(_packed_chunks(self))

    @classmethod
    def unpack(cls, bucketing: Bucketing, count: int, data: bytes) -> BucketSums:
        made = cls(bucketing, count)
        for b, n, high, low in _PACKED.iter_unpack(data):
            made.rows[b], made.high[b], made.low[b] = n, high, low
        return made


_PACKED = struct.Struct(">iqqQ")
_LOW = (1 << 64) - 1
_STRETCH = 4096


_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_FIELD = struct.Struct(">hi")  # a tuple of one field, and that field's length
_TRAILER = struct.pack(">h", -1)
_CHUNK_BUCKETS = 8192
SLICE_BYTES = _PACKED.size * 37449  # about 1 MB of whole buckets: a row of the record's stream
TEMP_TABLE = "pg_sync_bucket_sums"


def _packed_chunks(sums: BucketSums) -> Iterator[bytes]:
    """`sums.pack()`, a slice of buckets at a time."""
    rows, high, low = sums.rows, sums.high, sums.low
    for start in range(0, sums.count, _CHUNK_BUCKETS):
        out = bytearray()
        for b in range(start, min(start + _CHUNK_BUCKETS, sums.count)):
            if rows[b]:
                out += _PACKED.pack(b, rows[b], high[b], low[b])
        if out:
            yield bytes(out)


class _CopyIn:
    """File-like for `COPY ... FROM STDIN (FORMAT binary)`: one row, one bytea field."""

    def __init__(self, sums: BucketSums) -> None:
        length = _PACKED.size * (sums.count - sums.rows.count(0))
        # Lazily: the packed value is never whole in memory, only a slice of buckets at a time.
        self._parts = chain([_HEADER + _FIELD.pack(1, length)], _packed_chunks(sums), [_TRAILER])
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while len(self._pending) < max(size, 1):
            part = next(self._parts, None)
            if part is None:
                break
            self._pending += part
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def stage_bucket_sums(cur, sums: BucketSums) -> sql.Composable:
    """Send `sums` packed into a temporary table dropped at commit; the subquery that
    reads the value back on the server, for the record's upsert."""
    cur.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (sums bytea) ON COMMIT DROP").format(
            sql.Identifier(TEMP_TABLE)
        )
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(TEMP_TABLE)))
    cur.copy_expert(
        sql.SQL("COPY {} (sums) FROM STDIN (FORMAT binary)").format(sql.Identifier(TEMP_TABLE)), _CopyIn(sums)
    )
    return sql.SQL("(SELECT sums FROM {})").format(sql.Identifier(TEMP_TABLE))


class _CopyOut:
    """File-like for `COPY (SELECT bytea) TO STDOUT (FORMAT binary)`: the bytes of a
    packed value, in rows of whole buckets (`SLICE_BYTES`), unpacked bucket by bucket into
    `sums` as they arrive; each row is read in place."""

    def __init__(self, sums: BucketSums) -> None:
        self.sums = sums
        self._rest = b""  # an unfinished piece (a header, or part of one bucket)
        self._state = "header"
        self._left = 0  # bytes of the value still to come
        self.found = False

    def write(self, data) -> int:
        view = memoryview(self._rest + bytes(data) if self._rest else data).cast("B")
        at = 0
        while True:
            taken = self._step(view[at:])
            if taken is None:
                break
            at += taken
        self._rest = bytes(view[at:])
        return len(data)

    def _step(self, view: memoryview) -> int | None:
        """Bytes of `view` consumed by one step, or None when it needs more."""
        if self._state == "header":
            if len(view) < len(_HEADER):
                return None
            self._state = "tuple"
            return len(_HEADER)
        if self._state == "tuple":
            if len(view) < 2:
                return None
            if struct.unpack(">h", view[:2])[0] == -1:  # the trailer: no more rows
                self._state = "done"
                return None
            if len(view) < _FIELD.size:
                return None
            _, length = _FIELD.unpack(view[: _FIELD.size])
            if length >= 0:  # else NULL: the next tuple
                self._state, self._left, self.found = "value", length, True
            return _FIELD.size
        if self._state == "value":
            if self._left == 0:
                self._state = "tuple"
                return 0
            whole = min(self._left, len(view)) // _PACKED.size * _PACKED.size
            if whole == 0:
                return None
            rows, high, low = self.sums.rows, self.sums.high, self.sums.low
            for b, n, h, lo in _PACKED.iter_unpack(view[:whole]):
                rows[b], high[b], low[b] = n, h, lo
            self._left -= whole
            return whole
        return None


def read_bucket_sums(cur, query: sql.Composable, bucketing: Bucketing, count: int) -> BucketSums | None:
    """The packed value `query` selects (slices of whole buckets, one bytea a row, in order),
    unpacked as it streams; None when it selects no row or only NULL."""
    out = _CopyOut(BucketSums(bucketing, count))
    cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query), out)
    return out.sums if out.found else None
