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
from typing import NamedTuple

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


class Insert(NamedTuple):  # one per changed row: cheap to make
    relid: int
    new: tuple


class Update(NamedTuple):  # one per changed row: cheap to make
    relid: int
    old: tuple | None  # the old key ('K') or whole old row ('O'); None when the key did not change
    old_is_key_only: bool
    new: tuple


class Delete(NamedTuple):  # one per changed row: cheap to make
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


_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")


def _tuple_data(data: bytes, at: int) -> tuple[tuple, int]:
    """TupleData at `at`: (values, the offset after it). The hot path of a run: one call
    per changed row, so plain slicing, no objects."""
    try:
        (count,) = _I16.unpack_from(data, at)
        at += 2
        values = []
        append = values.append
        for _ in range(count):
            kind = data[at]
            at += 1
            if kind == 116 or kind == 98:  # 't', 'b': a length and the value
                (length,) = _I32.unpack_from(data, at)
                at += 4
                if at + length > len(data):
                    raise ProtocolError("value ends early")
                append(data[at : at + length])
                at += length
            elif kind == 110:  # 'n'
                append(None)
            elif kind == 117:  # 'u'
                append(UNCHANGED)
            else:
                raise ProtocolError(f"unknown column kind {chr(kind)!r}")
        return tuple(values), at
    except (struct.error, IndexError):
        raise ProtocolError("message ends early") from None


def _string(data: bytes, at: int) -> tuple[str, int]:
    end = data.find(b"\x00", at)
    if end < 0:
        raise ProtocolError("unterminated string")
    return data[at:end].decode("utf-8", "replace"), end + 1


def _marker(data: bytes, at: int) -> str:
    if at >= len(data):
        raise ProtocolError("message ends early")
    return chr(data[at])


def parse(data: bytes) -> Message:
    """One pgoutput message."""
    try:
        return _parse(bytes(data))
    except struct.error:
        raise ProtocolError("message ends early") from None


def _parse(data: bytes) -> Message:
    kind = _marker(data, 0)
    if kind in "IUD":
        (relid,) = _U32.unpack_from(data, 1)
        marker = _marker(data, 5)
        if kind == "I":
            if marker != "N":
                raise ProtocolError("INSERT without a new row")
            return Insert(relid, _tuple_data(data, 6)[0])
        if kind == "D":
            if marker not in ("K", "O"):
                raise ProtocolError("DELETE without the old key")
            return Delete(relid, _tuple_data(data, 6)[0], marker == "K")
        old, key_only, at = None, False, 6
        if marker in ("K", "O"):
            old, at = _tuple_data(data, 6)
            key_only = marker == "K"
            marker = _marker(data, at)
            at += 1
        if marker != "N":
            raise ProtocolError("UPDATE without a new row")
        return Update(relid, old, key_only, _tuple_data(data, at)[0])
    if kind == "B":
        final_lsn, _timestamp, xid = struct.unpack_from(">QqI", data, 1)
        return Begin(final_lsn, xid)
    if kind == "C":
        _flags, commit_lsn, end_lsn, _timestamp = struct.unpack_from(">BQQq", data, 1)
        return Commit(commit_lsn, end_lsn)
    if kind == "R":
        (relid,) = _U32.unpack_from(data, 1)
        schema, at = _string(data, 5)
        name, at = _string(data, at)
        identity = _marker(data, at)
        (count,) = _I16.unpack_from(data, at + 1)
        at += 3
        columns = []
        for _ in range(count):
            flags = data[at]
            column, at = _string(data, at + 1)
            type_oid, typmod = struct.unpack_from(">Ii", data, at)
            at += 8
            columns.append(RelationColumn(column, type_oid, typmod, bool(flags & 1)))
        return Relation(relid, schema, name, identity, tuple(columns))
    if kind == "T":
        count, _options = struct.unpack_from(">iB", data, 1)
        return Truncate(tuple(_U32.unpack_from(data, 6 + 4 * i)[0] for i in range(count)))
    if kind in ("O", "Y", "M"):
        return Other(kind)
    raise ProtocolError(f"unknown message type {kind!r}")


def lsn_text(lsn: int) -> str:
    """`0/16B3748`, as PostgreSQL writes a pg_lsn."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)
