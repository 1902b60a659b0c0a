"""The changes of one table, from the source's slot into an UNLOGGED changes table of
the target by one COPY (text format, the form the plugin sends), in commit order: a
sequence number, the operation, the old key (for an UPDATE that changed it, and a
DELETE), the new row, and which of its values the plugin left out as unchanged TOAST.
Only the transactions that committed after the target's recorded position and before
the run's bound are kept. Also how the changes table's columns are named in SQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from psycopg2 import sql

from ..errors import ConfigError
from ..load.staging import STAGING_SCHEMA, staging_column_type
from ..plan.introspect import Column
from .feed import Feed, read_changes
from .pgoutput import UNCHANGED, Begin, Delete, Insert, Relation, Truncate, Update

SEQ, OP, UNCHANGED_COL = "pg_sync_seq", "pg_sync_op", "pg_sync_unchanged"
MARK = "pg_sync_"  # prefix of the staging columns that are not the table's


class SchemaChanged(Exception):
    """The stream describes the table with other columns than the run planned with."""

    def __init__(self, before: list[str], after: list[str]) -> None:
        super().__init__(f"columns {before} in the change stream, {after} planned")
        self.before, self.after = before, after


@dataclass
class Batch:
    changes: int = 0  # staged rows: one per insert, update, delete or truncate
    transactions: int = 0
    bytes: int = 0
    skipped: int = 0  # changes of transactions the target already holds
    truncated: bool = False
    unchanged_values: int = 0  # values the plugin left out (unchanged TOAST)
    unchanged_columns: set[int] = field(default_factory=set)  # their places among the columns


def old_name(i: int) -> str:
    return f"{MARK}old_{i}"


def require_plain_columns(label: str, columns: list[Column]) -> None:
    taken = [c.name for c in columns if c.name.startswith(MARK)]
    if taken:
        raise ConfigError(
            f"`{label}`: column(s) {taken} start with `{MARK}`, which `mode: cdc` keeps for its "
            "staging columns; rename them or use another mode"
        )


def create_changes_table(cur, name: str, columns: list[Column], key: list[Column]) -> None:
    parts = [
        sql.SQL("{} bigint NOT NULL").format(sql.Identifier(SEQ)),
        sql.SQL("{} text NOT NULL").format(sql.Identifier(OP)),
        sql.SQL("{} text").format(sql.Identifier(UNCHANGED_COL)),
    ]
    parts += [
        sql.SQL("{} {}").format(sql.Identifier(old_name(i)), staging_column_type(k))
        for i, k in enumerate(key)
    ]
    parts += [sql.SQL("{} {}").format(sql.Identifier(c.name), staging_column_type(c)) for c in columns]
    cur.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
            sql.Identifier(STAGING_SCHEMA, name), sql.SQL(", ").join(parts)
        )
    )


def _escape(value) -> bytes:
    if value is None:
        return b"\\N"
    return value.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t")


class _Lines:
    """File-like over an iterator of COPY text lines, for `copy_expert`."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines, self._pending, self.bytes = lines, bytearray(), 0

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 1 << 16
        while len(self._pending) < size:
            line = next(self._lines, None)
            if line is None:
                break
            self._pending += line
        out = bytes(self._pending[:size])
        del self._pending[:size]
        self.bytes += len(out)
        return out

    readline = read


class ChangeStream:
    """The run's table's changes as COPY text lines for the changes table."""

    def __init__(
        self,
        relid: int,
        relation_columns: list[str],
        columns: list[Column],
        key: list[str],
        applied: int,
        batch: Batch,
    ) -> None:
        self.relid, self.expected = relid, relation_columns
        self.columns, self.key, self.applied, self.batch = columns, key, applied, batch
        self._positions: list[int] | None = None  # per copied column: its place in the relation's tuple
        self._key_positions: list[int] = []

    def _shape(self, rel: Relation) -> None:
        names = [c.name for c in rel.columns]
        if names != self.expected:
            raise SchemaChanged(names, self.expected)
        at = {n: i for i, n in enumerate(names)}
        self._positions = [at[c.name] for c in self.columns]
        self._key_positions = [at[k] for k in self.key]

    def lines(self, messages) -> Iterator[bytes]:
        skip, seen_txn = False, False
        seq = 0
        for _, msg in messages:
            if isinstance(msg, Begin):
                skip, seen_txn = msg.final_lsn < self.applied, False
                continue
            if isinstance(msg, Relation):
                if msg.relid == self.relid:
                    self._shape(msg)
                continue
            if isinstance(msg, Truncate):
                if self.relid not in msg.relids:
                    continue
            elif not isinstance(msg, (Insert, Update, Delete)) or msg.relid != self.relid:
                continue
            if skip:
                self.batch.skipped += 1
                continue
            if not seen_txn:
                seen_txn = True
                self.batch.transactions += 1
            seq += 1
            self.batch.changes += 1
            yield self._line(seq, msg)

    def _line(self, seq: int, msg) -> bytes:
        n_key, n_cols = len(self.key), len(self.columns)
        if isinstance(msg, Truncate):
            self.batch.truncated = True
            return self._join(seq, b"T", None, [None] * n_key, [None] * n_cols)
        assert self._positions is not None, "a change before its relation message"
        if isinstance(msg, Delete):
            old = [msg.old[p] for p in self._key_positions]
            return self._join(seq, b"D", None, old, [None] * n_cols)
        new = [msg.new[p] for p in self._positions]
        unchanged = None
        if any(v is UNCHANGED for v in new):
            self.batch.unchanged_values += sum(v is UNCHANGED for v in new)
            self.batch.unchanged_columns.update(i for i, v in enumerate(new) if v is UNCHANGED)
            unchanged = b"".join(b"1" if v is UNCHANGED else b"0" for v in new)
            new = [None if v is UNCHANGED else v for v in new]
        if isinstance(msg, Insert):
            return self._join(seq, b"I", None, [None] * n_key, new)
        if msg.old is not None:
            old = [msg.old[p] for p in self._key_positions]
        else:  # the key did not change: the old key is the new one
            old = [msg.new[p] for p in self._key_positions]
        return self._join(seq, b"U", unchanged, old, new)

    @staticmethod
    def _join(seq: int, op: bytes, unchanged: bytes | None, old: list, new: list) -> bytes:
        fields = (
            [str(seq).encode(), op, _escape(unchanged)]
            + [_escape(v) for v in old]
            + [_escape(v) for v in new]
        )
        return b"\t".join(fields) + b"\n"


def stage_changes(
    scur, tcur, feed: Feed, upto: int, changes: str, stream: ChangeStream, key: list[Column]
) -> None:
    """COPY the stream into the changes table (committed by the caller's transaction)."""
    names = (
        [SEQ, OP, UNCHANGED_COL] + [old_name(i) for i in range(len(key))] + [c.name for c in stream.columns]
    )
    source = _Lines(stream.lines(read_changes(scur.connection, feed, upto)))
    tcur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(STAGING_SCHEMA, changes), sql.SQL(", ").join(map(sql.Identifier, names))
        ),
        source,
    )
    stream.batch.bytes = source.bytes


def ident(table: str, column: str) -> sql.Composable:
    return sql.Identifier(table, column)


def as_staged(alias: str, col: Column) -> sql.Composable:
    """A target column as the changes table holds it (user-defined types as text)."""
    if col.travels_as_text:
        return sql.SQL("{}::text").format(ident(alias, col.name))
    return ident(alias, col.name)


def target_row(alias: str, key: list[Column]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(as_staged(alias, k) for k in key))
