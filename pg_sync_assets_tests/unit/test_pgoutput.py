"""pgoutput messages and the change stream's COPY lines, from bytes a server sent. No database."""

from __future__ import annotations

import struct

import pytest

from pg_sync_assets.engine.cdc.stream import Batch, ChangeStream, SchemaChanged
from pg_sync_assets.engine.cdc.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    ProtocolError,
    Relation,
    Truncate,
    Update,
    lsn_int,
    lsn_text,
    parse,
)
from pg_sync_assets.engine.plan.introspect import Column

# Messages as PostgreSQL 15 sent them (captured from pg_logical_slot_peek_binary_changes).
BEGIN = b"B\x00\x00\x00\x00\x01S\xb4\xf0\x00\x03\x05\rZ\x06\xb6\xd4\x00\x00\x02\xd7"
RELATION = (
    b"R\x00\x00@\x00public\x00t\x00d\x00\x03\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff"
    b"\x00v\x00\x00\x00\x00\x19\xff\xff\xff\xff\x00big\x00\x00\x00\x00\x19\xff\xff\xff\xff"
)
INSERT = b"I\x00\x00@\x00N\x00\x03t\x00\x00\x00\x012t\x00\x00\x00\x01bt\x00\x00\x00\x01y"
DELETE = b"D\x00\x00@\x00K\x00\x03t\x00\x00\x00\x012nn"
TRUNCATE = b"T\x00\x00\x00\x01\x00\x00\x00@\x00"
COMMIT = b"C\x00\x00\x00\x00\x00\x01S\xb4\xf0\x00\x00\x00\x00\x01S\xb5 \x00\x03\x05\rZ\x06\xb6\xd4"


def _tuple(*values) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            out += b"t" + struct.pack(">i", len(v)) + v
    return out


def test_messages_parse_as_the_server_sent_them():
    assert parse(BEGIN) == Begin(final_lsn=0x153B4F0, xid=727)
    rel = parse(RELATION)
    assert isinstance(rel, Relation) and (rel.relid, rel.schema, rel.name, rel.replica_identity) == (
        0x4000, "public", "t", "d")
    assert [(c.name, c.type_oid, c.is_key) for c in rel.columns] == [("id", 23, True), ("v", 25, False),
                                                                      ("big", 25, False)]
    assert parse(INSERT) == Insert(0x4000, (b"2", b"b", b"y"))
    assert parse(DELETE) == Delete(0x4000, (b"2", None, None), True)
    assert parse(TRUNCATE) == Truncate((0x4000,))
    assert parse(COMMIT) == Commit(0x153B4F0, 0x153B520)


def test_an_update_with_an_old_key_and_an_unchanged_toast_value():
    data = b"U" + struct.pack(">I", 7) + b"K" + _tuple(b"1", None, None) + b"N" + _tuple(b"9", b"x", UNCHANGED)
    assert parse(data) == Update(7, (b"1", None, None), True, (b"9", b"x", UNCHANGED))


@pytest.mark.parametrize("data", [b"Z", b"I\x00\x00", b"B\x00", b"U" + struct.pack(">I", 7) + b"Q"])
def test_damaged_or_unknown_messages_are_refused(data):
    with pytest.raises(ProtocolError):
        parse(data)


def test_lsn_text_round_trips():
    for text in ("0/0", "0/16B3748", "1A/FFFFFFFF"):
        assert lsn_text(lsn_int(text)) == text


def _stream(applied: int = 0) -> ChangeStream:
    columns = [Column("id", "integer"), Column("v", "text"), Column("big", "text")]
    return ChangeStream(0x4000, ["id", "v", "big"], columns, ["id"], applied, Batch())


def test_the_stream_writes_copy_text_lines_escaped_and_skips_what_the_target_holds():
    stream = _stream(applied=100)
    old_txn = Begin(final_lsn=50, xid=1)
    new_txn = Begin(final_lsn=200, xid=2)
    tab = Insert(0x4000, (b"3", b"a\tb\\c\nd\re", None))
    update = Update(0x4000, (b"3", None, None), True, (b"4", b"v", UNCHANGED))
    other_table = Insert(0x5000, (b"1",))
    messages = [parse(RELATION), old_txn, parse(INSERT), new_txn, tab, other_table, update,
                parse(DELETE), parse(TRUNCATE)]
    lines = list(stream.lines(enumerate(messages)))
    assert lines == [
        b"1\tI\t\\N\t\\N\t3\ta\\tb\\\\c\\nd\\re\t\\N\n",
        b"2\tU\t001\t3\t4\tv\t\\N\n",
        b"3\tD\t\\N\t2\t\\N\t\\N\t\\N\n",
        b"4\tT\t\\N\t\\N\t\\N\t\\N\t\\N\n",
    ]
    batch = stream.batch
    assert (batch.changes, batch.transactions, batch.skipped, batch.truncated) == (4, 1, 1, True)
    assert (batch.unchanged_values, batch.unchanged_columns) == (1, {2})


def test_a_relation_with_other_columns_means_the_schema_changed():
    added = RELATION.replace(b"\x00\x03\x01id", b"\x00\x04\x01id") + b"\x00new\x00\x00\x00\x00\x19\xff\xff\xff\xff"
    with pytest.raises(SchemaChanged) as caught:
        list(_stream().lines(enumerate([parse(added)])))
    assert caught.value.before == ["id", "v", "big", "new"]
