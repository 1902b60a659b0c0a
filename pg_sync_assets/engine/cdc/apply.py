"""A batch of decoded changes into the target: staged, resolved, applied, verified.

1. **Stage.** The feed's messages for the run's table, of the transactions that committed
   after the target's recorded position and before the run's bound, stream from the
   source's slot (read, not consumed) into an UNLOGGED table of the target by one COPY
   (text format, the form the plugin sends), in commit order: a sequence number, the
   operation, the old key (for an UPDATE that changed it, and a DELETE), the new row,
   and which of its values the plugin left out as unchanged TOAST.
2. **Resolve.** A value left out is the value the row had before that UPDATE: taken from
   the latest earlier change of the same row in the batch that carried it, else from the
   target (which holds the row as of the recorded position).
3. **Apply**, in the run's one target transaction: after a TRUNCATE (the last one of the
   batch) the target is emptied; per key, the last change decides: the row is upserted
   (MERGE from staging, only changed rows written) or deleted.
4. **Verify** before commit: the target's rows of every key the batch touched equal the
   batch's final rows (count and checksum), and no deleted key is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

from psycopg2 import sql

from ..errors import ConfigError, SyncError
from ..load.merge import KEY_LOOKUP_JOIN, MergeCounts, delete_rows, merge_from_staging
from ..load.staging import STAGING_SCHEMA, staging_column_type
from ..plan.introspect import Column
from ..sql import planner_settings
from ..verify.verify import ScopeChecksum, checksum_select
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


# -- resolving values the plugin left out -------------------------------------------------


def _ident(table: str, column: str) -> sql.Composable:
    return sql.Identifier(table, column)


def _row(alias: str, names: list[str]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(_ident(alias, n) for n in names))


def _as_staged(alias: str, col: Column) -> sql.Composable:
    """A target column as the changes table holds it (user-defined types as text)."""
    if col.travels_as_text:
        return sql.SQL("{}::text").format(_ident(alias, col.name))
    return _ident(alias, col.name)


def _target_row(alias: str, key: list[Column]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(_as_staged(alias, k) for k in key))


def _flag(alias: str, i: int) -> sql.Composable:
    return sql.SQL("substr(COALESCE({}, ''), {}, 1)").format(_ident(alias, UNCHANGED_COL), sql.Literal(i + 1))


def _entered_before(alias_row: str, key: list[Column], tbl: sql.Composable) -> sql.Composable:
    """The latest change before `alias_row`'s that made its old key exist (an insert, or an
    update that changed a key into it); NULL when the key existed before the batch."""
    knames = [k.name for k in key]
    olds = [old_name(i) for i in range(len(key))]
    return sql.SQL(
        "(SELECT max(e.{seq}) FROM {tbl} e WHERE {ek} = {so} AND e.{seq} < {s}.{seq}"
        " AND (e.{op} = 'I' OR (e.{op} = 'U' AND {eo} IS DISTINCT FROM {ek})))"
    ).format(
        seq=sql.Identifier(SEQ),
        op=sql.Identifier(OP),
        tbl=tbl,
        ek=_row("e", knames),
        eo=_row("e", olds),
        so=_row(alias_row, olds),
        s=sql.Identifier(alias_row),
    )


def resolve_unchanged(
    cur, changes: str, target, columns: list[Column], key: list[Column], after: int, pending: set[int]
) -> int:
    """Fill every left-out value of the columns `pending` (see the module docstring); the
    values filled. Raises SyncError when one cannot be found: nothing is applied then."""
    tbl = sql.Identifier(STAGING_SCHEMA, changes)
    knames = [k.name for k in key]
    olds = [old_name(i) for i in range(len(key))]
    filled = 0
    while True:
        progress = 0
        for i in sorted(pending):
            common = dict(
                tbl=tbl,
                col=sql.Identifier(columns[i].name),
                u=sql.Identifier(UNCHANGED_COL),
                clear=sql.SQL("overlay({} placing '0' from {} for 1)").format(
                    _ident("s", UNCHANGED_COL), sql.Literal(i + 1)
                ),
                pk=_row("p", knames),
                seq=sql.Identifier(SEQ),
                op=sql.Identifier(OP),
                pflag=_flag("p", i),
            )
            # From the latest earlier change of the row (since it last came to exist) that carried it.
            cur.execute(
                sql.SQL(
                    "UPDATE {tbl} s SET {col} = r.v, {u} = {clear} FROM {tbl} s2 CROSS JOIN LATERAL ("
                    " SELECT p.{col} AS v FROM {tbl} p WHERE {pk} = {so} AND p.{seq} < s2.{seq}"
                    " AND p.{op} IN ('I', 'U') AND p.{seq} >= COALESCE({entered}, 0)"
                    " AND {pflag} <> '1' ORDER BY p.{seq} DESC LIMIT 1) r"
                    " WHERE s.{seq} = s2.{seq} AND {sflag} = '1' AND s2.{seq} > {after}"
                ).format(
                    so=_row("s2", olds),
                    entered=_entered_before("s2", key, tbl),
                    sflag=_flag("s2", i),
                    after=sql.Literal(after),
                    **common,
                )
            )
            progress += cur.rowcount
            if after == 0:  # no TRUNCATE in the batch: the target holds the rows it started from
                cur.execute(
                    sql.SQL(
                        "UPDATE {tbl} s SET {col} = {tv}, {u} = {clear} FROM {target} t"
                        " WHERE {tk} = {so} AND {sflag} = '1' AND {entered} IS NULL"
                        " AND NOT EXISTS (SELECT 1 FROM {tbl} p WHERE {pk} = {so} AND p.{seq} < s.{seq}"
                        " AND p.{op} IN ('I', 'U') AND {pflag} <> '1')"
                    ).format(
                        tv=_as_staged("t", columns[i]),
                        target=target.ident,
                        tk=_target_row("t", key),
                        so=_row("s", olds),
                        sflag=_flag("s", i),
                        entered=_entered_before("s", key, tbl),
                        **common,
                    )
                )
                progress += cur.rowcount
        filled += progress
        if progress == 0:
            break
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE position('1' in COALESCE({}, '')) > 0 AND {} > {}").format(
            tbl, sql.Identifier(UNCHANGED_COL), sql.Identifier(SEQ), sql.Literal(after)
        )
    )
    left = cur.fetchone()[0]
    if left:
        raise SyncError(
            str(target),
            "apply",
            f"{left} updated rows carry values the source left out as unchanged and that neither the "
            "batch nor the target holds; nothing was written; run `reconcile` on the table",
            side="target",
        )
    return filled


# -- applying -------------------------------------------------------------------------------


def last_truncate(cur, changes: str) -> int:
    cur.execute(
        sql.SQL("SELECT COALESCE(max({}), 0) FROM {} WHERE {} = 'T'").format(
            sql.Identifier(SEQ), sql.Identifier(STAGING_SCHEMA, changes), sql.Identifier(OP)
        )
    )
    return cur.fetchone()[0]


def build_last(cur, changes: str, last: str, key: list[Column], after: int) -> None:
    """`last`: per key the batch touched, the sequence number of its last change, whether
    the row exists after it (an update that changed a key also removes the old one), and
    whether it existed before the batch (its first change was an update or a delete of
    it: the source is consistent, so no target lookup is needed to tell inserts apart)."""
    knames = [k.name for k in key]
    olds = [old_name(i) for i in range(len(key))]
    tbl = sql.Identifier(STAGING_SCHEMA, changes)
    new_keys = sql.SQL(", ").join(sql.Identifier(n) for n in knames)
    old_as_keys = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.Identifier(o), sql.Identifier(n))
        for o, n in zip(olds, knames, strict=True)
    )
    keys = sql.SQL(", ").join(sql.Identifier(n) for n in knames)
    cur.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE {last} AS SELECT DISTINCT ON ({keys}) {seq}, {keys}, present,"
            " first_value(prior) OVER (PARTITION BY {keys} ORDER BY {seq}) AS existed FROM ("
            " SELECT {seq}, {new_keys}, true AS present, {op} = 'U' AND {olds} = {news} AS prior FROM {tbl}"
            "  WHERE {op} IN ('I', 'U') AND {seq} > {after}"
            " UNION ALL SELECT {seq}, {old_as_keys}, false, true FROM {tbl} WHERE {seq} > {after}"
            "  AND ({op} = 'D' OR ({op} = 'U' AND {olds} IS DISTINCT FROM {news}))"
            ") ev ORDER BY {keys}, {seq} DESC"
        ).format(
            last=sql.Identifier(STAGING_SCHEMA, last),
            keys=keys,
            seq=sql.Identifier(SEQ),
            new_keys=new_keys,
            old_as_keys=old_as_keys,
            tbl=tbl,
            op=sql.Identifier(OP),
            after=sql.Literal(after),
            olds=sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, olds))),
            news=sql.SQL("({})").format(keys),
        )
    )
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, last)))


def fill_staging(cur, changes: str, last: str, staging: str, columns: list[Column]) -> int:
    """The rows that exist after the batch into the run's staging table; how many."""
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    cur.execute(
        sql.SQL(
            "INSERT INTO {staging} ({names}) SELECT {cols} FROM {last} l JOIN {tbl} c USING ({seq})"
            " WHERE l.present"
        ).format(
            staging=sql.Identifier(STAGING_SCHEMA, staging),
            names=names,
            cols=sql.SQL(", ").join(_ident("c", c.name) for c in columns),
            last=sql.Identifier(STAGING_SCHEMA, last),
            tbl=sql.Identifier(STAGING_SCHEMA, changes),
            seq=sql.Identifier(SEQ),
        )
    )
    return cur.rowcount


def _in_last(alias: str, last: str, key: list[Column], present: bool) -> sql.Composable:
    """Rows of the target (alias `alias`) whose key the batch left present (or removed).
    An EXISTS the planner can drive from the batch's keys, by the target's key index."""
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_ident("l", k.name), _as_staged(alias, k)) for k in key
    )
    return sql.SQL("EXISTS (SELECT 1 FROM {} l WHERE {} AND {}l.present)").format(
        sql.Identifier(STAGING_SCHEMA, last), match, sql.SQL("" if present else "NOT ")
    )


def empty_table(cur, target, shape) -> int:
    """After a TRUNCATE in the batch: the target emptied (only the changes after it count)."""
    return delete_rows(cur, target, sql.SQL("true"), shape)


def delete_batch(cur, target, last: str, key: list[Column], shape, after: int) -> MergeCounts:
    """In the final transaction: delete the keys whose last change removed them."""
    with by_key(cur, shape, key):
        deleted = delete_rows(cur, target, _in_last("t", last, key, present=False), shape)
    return MergeCounts(0, 0, deleted, "cdc")


def upsert_batch(
    cur,
    target,
    staging: str,
    last: str,
    columns: list[Column],
    key: list[Column],
    rows: int,
    shape,
    truncated: bool,
) -> MergeCounts:
    """In the final transaction: upsert the rows present after the batch (only changed rows
    are written); inserts are told from updates by the changes themselves."""
    matched = None
    if not truncated:  # the rows that existed before the batch, from the changes alone
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE present AND existed").format(
                sql.Identifier(STAGING_SCHEMA, last)
            )
        )
        matched = cur.fetchone()[0]
    if not rows:
        return MergeCounts(0, 0, 0, "cdc")
    if not shape.enforces(tuple(k.name for k in key)):  # else joined by key lookups anyway
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
    counts = merge_from_staging(cur, target, staging, columns, key, rows, shape, matched=matched)
    return MergeCounts(counts.inserted, counts.updated, 0, "cdc")


def verify_batch(
    cur, target, staging: str, last: str, columns: list[Column], key: list[Column], truncated: bool, shape
) -> tuple[ScopeChecksum, ScopeChecksum, int]:
    """(the batch's final rows, the target's rows of the same keys, target rows left of
    deleted keys): equal, equal and 0 when the batch was applied as decoded. After a
    TRUNCATE the whole table is compared."""
    cur.execute(
        sql.SQL("SELECT {} FROM {}").format(checksum_select(columns), sql.Identifier(STAGING_SCHEMA, staging))
    )
    n, total = cur.fetchone()
    expected = ScopeChecksum(n, total)
    scope = sql.SQL("true") if truncated else _in_last("t", last, key, present=True)
    with by_key(cur, shape, key):
        cur.execute(
            sql.SQL("SELECT {} FROM {} t WHERE {}").format(checksum_select(columns), target.ident, scope)
        )
        n, total = cur.fetchone()
        found = ScopeChecksum(n, total)
        gone = _in_last("t", last, key, present=False)
        cur.execute(sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(target.ident, gone))
        left = cur.fetchone()[0]
    return expected, found, left


def by_key(cur, shape, key: list[Column]):
    """Joins of the batch's keys to the target as key lookups, where a unique index has
    the key (the batch is small beside the table: a hash join would scan it whole)."""
    if shape is not None and shape.enforces(tuple(k.name for k in key)):
        return planner_settings(cur, KEY_LOOKUP_JOIN)
    return nullcontext()
