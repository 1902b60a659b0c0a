"""Key buckets and their sums (`localize`, `record`), and how the verified record's
bucket sums travel in and out of the target: as a stream.

The record keeps a table's bucket sums as one `bytea` value (`BucketSums.pack`: 28
bytes a non-empty bucket, up to 28 MB at 2^20 buckets). As a query parameter or result,
psycopg2 would carry it as hex text, and libpq and Python would each hold a whole copy
or two of it: at a million buckets, over 100 MB for a value the run reads a slice at a
time. So it travels by binary COPY, of one row with one `bytea` field, through bounded
chunks: written into a temporary table the record's upsert then reads, and read back
into `BucketSums` as its bytes arrive.
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
        big-endian; the checksum as its high signed and low unsigned 8 bytes)."""
        out = bytearray(_PACKED.size * (self.count - self.rows.count(0)))
        at = 0
        for b, (n, high, low) in enumerate(zip(self.rows, self.high, self.low, strict=True)):
            if n:
                _PACKED.pack_into(out, at, b, n, high, low)
                at += _PACKED.size
        return bytes(out)

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
    """File-like for `COPY (SELECT bytea) TO STDOUT (FORMAT binary)`: the bytes of one
    packed value, unpacked bucket by bucket into `sums` as they arrive."""

    def __init__(self, sums: BucketSums) -> None:
        self.sums = sums
        self._buffer = b""
        self._state = "header"
        self._left = 0  # bytes of the value still to come
        self.found = False

    def write(self, data) -> int:
        self._buffer += bytes(data)
        while self._step():
            pass
        return len(data)

    def _step(self) -> bool:
        buffer = self._buffer
        if self._state == "header":
            if len(buffer) < len(_HEADER):
                return False
            self._buffer, self._state = buffer[len(_HEADER) :], "tuple"
            return True
        if self._state == "tuple":
            if len(buffer) < 2:
                return False
            if struct.unpack(">h", buffer[:2])[0] == -1:  # the trailer: no row
                self._buffer, self._state = buffer[2:], "done"
                return False
            if len(buffer) < _FIELD.size:
                return False
            _, length = _FIELD.unpack(buffer[: _FIELD.size])
            self._buffer = buffer[_FIELD.size :]
            if length < 0:  # NULL
                self._state = "tuple"
                return True
            self._state, self._left, self.found = "value", length, True
            return True
        if self._state == "value":
            whole = min(self._left, len(buffer)) // _PACKED.size * _PACKED.size
            if whole == 0:
                if self._left == 0:
                    self._state = "tuple"
                    return True
                return False
            for b, n, high, low in _PACKED.iter_unpack(buffer[:whole]):
                self.sums.rows[b], self.sums.high[b], self.sums.low[b] = n, high, low
            self._buffer, self._left = buffer[whole:], self._left - whole
            return True
        return False


def read_bucket_sums(cur, query: sql.Composable, bucketing: Bucketing, count: int) -> BucketSums | None:
    """The packed value `query` selects (one row, one bytea), unpacked as it streams; None
    when it selects no row or NULL."""
    out = _CopyOut(BucketSums(bucketing, count))
    cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query), out)
    return out.sums if out.found else None
