"""Which rows differ: narrow a failed comparison down to primary keys.

Pass 1 (one scan a side): rows are spread over N buckets by a hash of their key's
canonical text; each side reports count and checksum per bucket. Equal buckets are
done. Pass 2: both sides stream `(key text, row hash)` for the differing buckets only,
sorted by the key's bytes (`COLLATE "C"`, the order Python compares str in), as a COPY
through a bounded pipe; a merge of the two sorted streams finds keys missing from the
target, extra in the target, and changed. Memory stays bounded whatever the table size;
the rows fetched grow with the number of differences, not with the table.

Hash buckets rather than key ranges work alike for any key type (composite, text,
Korean), at the price of a full scan per pass instead of index range scans. A single
integer key (the usual serial or identity column) is bucketed by blocks instead: 16
consecutive values share a bucket, and the blocks of a stretch of 16 × N values are
shuffled over the N buckets by a hash of the stretch. Rows stored in key order then
meet their bucket's running sums 16 at a time instead of one at a time, which takes a
quarter off pass 1's aggregate (measured, docs/benchmarks.md); sparse or patterned keys still spread
as evenly as the hash spreads them, since the shuffle within a stretch is one-to-one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from psycopg2 import sql
from psycopg2.extensions import encodings

from ..errors import ConfigError
from ..load.copy import ChunkPipe, copy_out_in_thread
from ..plan.introspect import Column
from ..plan.plan import TablePlan, plan_table
from ..plan.side_effects import require_side_effect_free
from ..sql import pin_text_settings, source_scope, target_scope
from ..verify.buckets import INTEGER_BLOCKS, KEY_TEXT, Bucketing, BucketSums
from ..verify.verify import row_hash
from .key_table import KeyTable
from .parallel_sums import parallel_bucket_sums, sum_workers

BUCKET_SEED = 20261122
GROUP_BITS = 4  # an integer key's buckets hold blocks of 2**4 consecutive values
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
PARALLEL_TUPLE_COST = "0.001"  # the default 0.1 keeps pass 2's scan serial (see _KeyStream)
LOCALIZE_WORK_MEM = "256MB"


@dataclass
class Difference:
    """Keys (as `ROW(key)::text`) that differ, the first `limit` of each kind, and counts.

    `parts` maps each listed key to its columns' own texts (for typed, index-friendly
    filters); `source_rows` and `source_sum` are the source scope's totals from pass 1.
    """

    limit: int
    missing: list[str] = field(default_factory=list)  # in the source, not in the target
    extra: list[str] = field(default_factory=list)  # in the target, not in the source
    changed: list[str] = field(default_factory=list)
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing_count: int = 0
    extra_count: int = 0
    changed_count: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    keys_compared: int = 0
    source_rows: int = 0
    source_sum: int = 0
    target_rows: int = 0
    target_sum: int = 0
    extra_sum: int = 0  # sum of the row hashes of every extra row (all of them, not the first `limit`)
    changed_target_sum: int = 0  # sum of the target's row hashes of every changed key
    source_buckets: BucketSums | None = None  # pass 1's source sums (what a synced target will hold)
    target_buckets_recorded: bool = False  # pass 1 took the target's sums from its record
    abandoned: bool = False  # pass 1 found more differing buckets than the caller would localize
    target_recorded_at: str | None = None  # the target totals came from a run's record (`record.py`)
    target_horizon: int | None = None  # taken before the target totals were hashed live
    seconds_pass1: float = 0.0
    seconds_pass2: float = 0.0
    # Every differing key, in a table of the target (`KeyTable`), when the caller asked for
    # them all: the lists above then hold only the first `limit`, for messages.
    keys_table: str | None = None
    sink: KeyTable | None = field(default=None, repr=False, compare=False)

    @property
    def total(self) -> int:
        return self.missing_count + self.extra_count + self.changed_count

    @property
    def all_listed(self) -> bool:
        """Every differing key is known: in `keys_table`, or in the lists."""
        return self.keys_table is not None or (
            len(self.missing) == self.missing_count
            and len(self.changed) == self.changed_count
            and len(self.extra) == self.extra_count
        )

    def add(self, kind: str, key: str, parts: list[str]) -> None:
        setattr(self, f"{kind}_count", getattr(self, f"{kind}_count") + 1)
        if self.sink is not None:
            self.sink.add(kind, parts)
        keys = getattr(self, kind)
        if len(keys) < self.limit:
            keys.append(key)
            self.parts[key] = tuple(parts)

    def key_columns_text(self, keys: list[str], width: int) -> list[list[str]]:
        """The listed `keys` transposed: one list of texts per key column."""
        return [[self.parts[k][i] for k in keys] for i in range(width)]


def bucket_count(rows: int) -> int:
    """A power of two giving about 16 rows a bucket (64 to 1M buckets): fine enough that
    a 1% difference leaves most buckets equal, coarse enough to return cheaply (4 rows a
    bucket made pass 1's aggregate cost more than pass 2 saved, measured at 2M rows)."""
    n = 64
    while n < rows / 16 and n < (1 << 20):
        n *= 2
    return n


def bucketing(plan: TablePlan) -> Bucketing:
    """By blocks for a key of one integer column, else by a hash of the key's text."""
    columns = plan.key_columns()
    if len(columns) == 1 and columns[0].type_key in INTEGER_TYPES:
        return Bucketing(plan.key, INTEGER_BLOCKS)
    return Bucketing(plan.key, KEY_TEXT)


def bucket_of(bucketing: Bucketing, n: int) -> sql.Composed:
    """The bucket of a row, 0 to n - 1 (n a power of two)."""
    if bucketing.by == INTEGER_BLOCKS:
        # Within a stretch of n blocks, XOR with the stretch's hash permutes the blocks.
        template = "((({k} >> {group}) # hashint8extended({k} >> {stretch}, {seed})) & {mask})"
        return sql.SQL(template).format(
            k=sql.SQL("{}::bigint").format(sql.Identifier(bucketing.key[0])),
            group=sql.Literal(GROUP_BITS),
            stretch=sql.Literal(GROUP_BITS + n.bit_length() - 1),
            seed=sql.Literal(BUCKET_SEED),
            mask=sql.Literal(n - 1),
        )
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in bucketing.key)
    return sql.SQL("(hashtextextended(ROW({})::text, {}) & {})").format(
        keys, sql.Literal(BUCKET_SEED), sql.Literal(n - 1)
    )


def _inner(spec, bucketing: Bucketing, columns: Sequence[Column], side: str, n: int) -> sql.Composed:
    """The scope as (bucket, key text, row hash, key parts p0, p1, ...).

    Values are literals, never bind parameters: with parameters psycopg2 would read any
    `%` in a quoted identifier or in the operator's `where` as a placeholder."""
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in bucketing.key)
    parts = sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(column), sql.Identifier(f"p{i}"))
        for i, column in enumerate(bucketing.key)
    )
    select = sql.SQL("{} AS b, ROW({})::text AS k, {} AS h, {}")
    select = select.format(bucket_of(bucketing, n), keys, row_hash(columns), parts)
    return (source_scope if side == "source" else target_scope)(spec, select)


class _SumsReader:
    """Text COPY rows `bucket, count, checksum` written into `sums` as they arrive: no
    list of every bucket's row is ever held (`record.BucketSums`)."""

    def __init__(self, sums: BucketSums) -> None:
        self.sums, self._rest = sums, b""

    def write(self, data) -> int:
        chunk = self._rest + (data.encode() if isinstance(data, str) else bytes(data))
        *lines, self._rest = chunk.split(b"\n")
        for line in lines:
            bucket, rows, total = line.split(b"\t")
            self.sums.set(int(bucket), int(rows), int(total))
        return len(data)


def _bucket_sums(cur, inner: sql.Composed, sums: BucketSums) -> BucketSums:
    statement = sql.SQL("COPY (SELECT b, count(*), sum(h) FROM ({}) AS x GROUP BY b) TO STDOUT")
    cur.copy_expert(statement.format(inner), _SumsReader(sums))
    return sums


class _KeyStream:
    """[key text, row hash text, key parts...] of one side, in byte order of the key.

    A `COPY (sorted query) TO STDOUT` read through a bounded pipe (`copy.ChunkPipe`):
    memory stays bounded whatever the number of rows, and unlike a server-side cursor,
    which PostgreSQL never runs in parallel, the COPY's query can use parallel workers.
    The planner would not pick them here (it cannot estimate the bucket filter and
    expects every row), so a cheaper tuple transfer is set for the transaction. Fields
    stay text (a hash's text is int8out's, one per value): parsing is most of the
    Python side, and only the differing rows need their hash as a number.

    The COPY starts when the stream is made, not when it is first read: the merge reads
    one side first, and that side's first row arrives only once its scan and sort are
    done, so a side started on first read would begin its own only then. On separate
    hosts the two sorts overlap; on one 2-core machine, where each side's scan already
    takes both cores, it measured the same (docs/benchmarks.md). Leaving the `with` block stops a
    COPY not read to its end."""

    def __init__(self, conn, inner: sql.Composed, buckets: list[int] | None, width: int) -> None:
        filter_ = sql.SQL("")
        if buckets is not None:
            filter_ = sql.SQL("WHERE b = ANY({}::bigint[])").format(sql.Literal(buckets))
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in ["k", "h", *(f"p{i}" for i in range(width))])
        statement = sql.SQL('COPY (SELECT {} FROM ({}) AS x {} ORDER BY k COLLATE "C") TO STDOUT').format(
            columns, inner, filter_
        )
        self._codec = encodings[conn.encoding]
        self._pipe = ChunkPipe(None, 0.0)
        self._cur = conn.cursor()
        try:
            self._cur.execute("SELECT set_config('parallel_tuple_cost', %s, true)", (PARALLEL_TUPLE_COST,))
            self._worker, _ = copy_out_in_thread(self._cur, statement, self._pipe, "pg-sync-localize")
        except BaseException:
            self._cur.close()
            raise

    def __iter__(self) -> Iterator[list[str]]:
        while chunk := self._pipe.read():
            # Every chunk ends with a whole row; inside a field, COPY escapes tab and newline.
            text = chunk.decode(self._codec)
            if "\\" in text:  # most chunks have no escape at all
                for line in text.split("\n"):
                    if line:
                        yield [_unescape(f) for f in line.split("\t")]
            else:
                for line in text.split("\n"):
                    if line:
                        yield line.split("\t")
        self._worker.join()
        self._cur.execute("RESET parallel_tuple_cost")  # the rest of the transaction plans as before

    def __enter__(self) -> _KeyStream:
        return self

    def __exit__(self, *exc) -> None:
        """Stop the COPY if it was not read to its end; close the cursor."""
        self._pipe.cancel()
        self._worker.join()
        self._cur.close()


# COPY's text format escapes these; it writes any other character as it is.
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPED = re.compile(r"\\(.)")


def _unescape(field: str) -> str:
    return _ESCAPED.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), field) if "\\" in field else field


def _merge(diff: Difference, source: Iterator[list[str]], target: Iterator[list[str]]) -> None:
    s, t = next(source, None), next(target, None)
    compared = 0
    while s is not None or t is not None:
        compared += 1
        if t is None or (s is not None and s[0] < t[0]):
            diff.add("missing", s[0], s[2:])
            s = next(source, None)
        elif s is None or t[0] < s[0]:
            diff.add("extra", t[0], t[2:])
            diff.extra_sum += int(t[1])
            t = next(target, None)
        else:
            if s[1] != t[1]:
                diff.add("changed", s[0], s[2:])
                diff.changed_target_sum += int(t[1])
            s, t = next(source, None), next(target, None)
    diff.keys_compared += compared


def bucket_sums(conn, spec, bucketing: Bucketing, columns: Sequence[Column], side: str, n: int) -> BucketSums:
    """Pass 1 on one side: count and checksum per bucket, over `n` buckets."""
    with conn.cursor() as cur:
        pin_text_settings(cur)
        # Up to a million groups: keep the hash aggregate in memory, not spilled.
        cur.execute("SELECT set_config('work_mem', %s, true)", (LOCALIZE_WORK_MEM,))
        workers, pages = sum_workers(cur, spec, side, n)
        if workers > 1:  # `parallel`: several sessions under this transaction's snapshot
            return parallel_bucket_sums(
                conn,
                spec,
                bucketing,
                columns,
                side,
                n,
                workers,
                pages,
                lambda scope: _inner(scope, bucketing, columns, side, n),
                LOCALIZE_WORK_MEM,
            )
        return _bucket_sums(cur, _inner(spec, bucketing, columns, side, n), BucketSums(bucketing, n))


def localize(
    spec,
    source_conn,
    target_conn,
    bucketing: Bucketing,
    columns: Sequence[Column],
    rows_hint: int,
    limit: int = 100,
    *,
    target_spec=None,
    give_up_above: float | None = None,
    target_buckets: BucketSums | None = None,
    source_buckets: BucketSums | None = None,
    keys_table: str | None = None,
) -> Difference:
    """Compare both scopes bucket by bucket, then key by key in the differing buckets.

    Both connections must be in a transaction (the source ideally REPEATABLE READ, so
    both passes read one snapshot); the caller ends them. `target_spec` (default `spec`)
    decides the target side's scope: a full refresh compares the whole target table.
    With `give_up_above`, a share of differing buckets (of those holding rows on either
    side) above it ends the work after pass 1 with `abandoned` set. A side whose bucket
    sums the caller gives is not read in pass 1: the target's from a verified record of
    a target no one has written since, the source's when the caller read them while it
    checked that record. Given sums decide the bucket count. With `keys_table`, every
    differing key goes to a `KeyTable` of that name in the target (the lists keep the
    first `limit`).
    """
    given = [b for b in (source_buckets, target_buckets) if b is not None]
    n = given[0].count if given else bucket_count(rows_hint)
    if any(b.count != n or b.bucketing != bucketing for b in given):
        raise ValueError("bucket sums of different bucketings cannot be compared")
    diff = Difference(limit=limit, buckets=n, target_buckets_recorded=target_buckets is not None)
    sides = {"source": (source_conn, spec), "target": (target_conn, target_spec or spec)}
    inner = {side: _inner(scope, bucketing, columns, side, n) for side, (_, scope) in sides.items()}

    def read(side: str) -> BucketSums:
        conn, scope = sides[side]
        return bucket_sums(conn, scope, bucketing, columns, side, n)

    started = time.monotonic()
    if source_buckets is None and target_buckets is None:
        # Two servers: pass 1 runs on both at once (psycopg2 releases the GIL while waiting).
        with ThreadPoolExecutor(max_workers=1) as pool:
            target = pool.submit(read, "target")
            source_buckets = read("source")
            target_buckets = target.result()
    source_buckets = source_buckets or read("source")
    target_buckets = target_buckets or read("target")
    diff.source_buckets = source_buckets
    source_total, target_total = source_buckets.total, target_buckets.total
    diff.source_rows, diff.source_sum = source_total.rows, int(source_total.checksum)
    diff.target_rows, diff.target_sum = target_total.rows, int(target_total.checksum)
    filled, differing = source_buckets.compare(target_buckets)  # filled: rows on either side
    diff.differing_buckets = len(differing)
    diff.seconds_pass1 = round(time.monotonic() - started, 3)
    if not differing:
        return diff
    if give_up_above is not None and len(differing) > give_up_above * filled:
        diff.abandoned = True
        return diff
    started = time.monotonic()
    # When most buckets differ, reading everything is cheaper than filtering.
    buckets = differing if len(differing) < filled // 2 else None
    width = len(bucketing.key)
    if keys_table is not None:
        diff.sink, diff.keys_table = KeyTable(target_conn, keys_table, width), keys_table
    try:
        with (  # both servers sort at once
            _KeyStream(source_conn, inner["source"], buckets, width) as source,
            _KeyStream(target_conn, inner["target"], buckets, width) as target,
        ):
            _merge(diff, iter(source), iter(target))
    finally:
        if diff.sink is not None:
            diff.sink.close()
            diff.sink = None
    diff.seconds_pass2 = round(time.monotonic() - started, 3)
    return diff


def localize_table(spec, source_conn, target_conn, rows_hint: int, limit: int = 100) -> Difference:
    """Localize the differences of `spec`'s scopes, both read in one snapshot a side."""
    source_conn.rollback()
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    target_conn.rollback()
    target_conn.set_session(isolation_level="REPEATABLE READ", autocommit=False)
    try:
        with source_conn.cursor() as cur, target_conn.cursor() as tcur:
            plan = plan_table(cur, spec)
            require_side_effect_free(tcur, spec, "target")
        if not plan.key:
            raise ConfigError(
                f"cannot tell which rows of `{spec.target}` differ: it has no key; set `primary_key`"
            )
        return localize(spec, source_conn, target_conn, bucketing(plan), plan.columns, rows_hint, limit)
    finally:
        source_conn.rollback()
        target_conn.rollback()
