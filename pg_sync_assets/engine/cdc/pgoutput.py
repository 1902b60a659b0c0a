"""The messages of PostgreSQL's `pgoutput` plugin (protocol version 1), as
`pg_logical_slot_peek_binary_changes` returns them: one message a row. Pure: bytes in,
named tuples out.

Column values stay in the form the plugin sent: `bytes` of the type's text output (the
slot is read without the `binary` option, so every type, user-defined ones included,
arrives in the text form `COPY ... (FORMAT text)` reads back), `None` for NULL, and
`UNCHANGED` for a TOASTed value an UPDATE left as it was, which the plugin does not send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

UNCHANGED = object()  # 'u': an out-of-line value the UPDATE did not change, not sent


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the commit record's position: what a run's bound and the record compare
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int


@dataclass(frozen=True)
class RelationColumn:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    relid: int
    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True)
class Insert:
    relid: int
    new: tuple


@dataclass(frozen=True)
class Update:
    relid: int
    old: tuple | None  # the old key ('K') or whole old row ('O'); None when the key did not change
    old_is_key_only: bool
    new: tuple


@dataclass(frozen=True)
class Delete:
    relid: int
    old: tuple
    old_is_key_only: bool


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]


@dataclass(frozen=True)
class Other:
    kind: str  # origin, type, logical message: nothing a table's rows depend on


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Other


class ProtocolError(ValueError):
    """A message this reader does not understand (a newer protocol, or damaged bytes)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = memoryview(data), 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ProtocolError("message ends early")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values

    def byte(self) -> str:
        return chr(self.take(">B")[0])

    def string(self) -> str:
        end = bytes(self.data[self.at :]).find(b"\x00")
        if end < 0:
            raise ProtocolError("unterminated string")
        text = bytes(self.data[self.at : self.at + end]).decode("utf-8", "replace")
        self.at += end + 1
        return text

    def raw(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ProtocolError("value ends early")
        out = bytes(self.data[self.at : self.at + n])
        self.at += n
        return out

    def tuple_data(self) -> tuple:
        (count,) = self.take(">h")
        values: list = []
        for _ in range(count):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind in ("t", "b"):
                (length,) = self.take(">i")
                values.append(self.raw(length))
            else:
                raise ProtocolError(f"unknown column kind {kind!r}")
        return tuple(values)


def parse(data: bytes) -> Message:
    """One pgoutput message."""
    r = _Reader(data)
    kind = r.byte()
    if kind == "B":
        final_lsn, _timestamp, xid = r.take(">QqI")
        return Begin(final_lsn, xid)
    if kind == "C":
        _flags, commit_lsn, end_lsn, _timestamp = r.take(">BQQq")
        return Commit(commit_lsn, end_lsn)
    if kind == "R":
        (relid,) = r.take(">I")
        schema, name = r.string(), r.string()
        identity = r.byte()
        (count,) = r.take(">h")
        columns = []
        for _ in range(count):
            (flags,) = r.take(">B")
            column = r.string()
            type_oid, typmod = r.take(">Ii")
            columns.append(RelationColumn(column, type_oid, typmod, bool(flags & 1)))
        return Relation(relid, schema, name, identity, tuple(columns))
    if kind == "I":
        (relid,) = r.take(">I")
        if r.byte() != "N":
            raise ProtocolError("INSERT without a new row")
        return Insert(relid, r.tuple_data())
    if kind == "U":
        (relid,) = r.take(">I")
        marker = r.byte()
        old, key_only = None, False
        if marker in ("K", "O"):
            old, key_only = r.tuple_data(), marker == "K"
            marker = r.byte()
        if marker != "N":
            raise ProtocolError("UPDATE without a new row")
        return Update(relid, old, key_only, r.tuple_data())
    if kind == "D":
        (relid,) = r.take(">I")
        marker = r.byte()
        if marker not in ("K", "O"):
            raise ProtocolError("DELETE without the old key")
        return Delete(relid, r.tuple_data(), marker == "K")
    if kind == "T":
        count, _options = r.take(">iB")
        return Truncate(tuple(r.take(">I")[0] for _ in range(count)))
    if kind in ("O", "Y", "M"):
        return Other(kind)
    raise ProtocolError(f"unknown message type {kind!r}")


def lsn_text(lsn: int) -> str:
    """`0/16B3748`, as PostgreSQL writes a pg_lsn."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)
