"""The verified record of a target table: skip re-hashing a target nobody wrote since.

A run that verifies a whole target table (its count and checksum equal the source
snapshot's) writes them to `sync_staging.verified_tables`, in the same transaction as
its writes, with two transaction ids:
- `horizon`: the oldest transaction still running when the verification's snapshot was
  taken (taken just before it). Every transaction whose writes that snapshot did not
  see has an id from `horizon` on.
- `writer`: the run's own transaction.

PostgreSQL stores with every row version the id of the transaction that wrote it
(`xmin`). So a later insert or update, by anyone and through any path (this project's
own runs included), leaves a visible row whose `xmin` is `horizon` or later and not
`writer`; a delete leaves fewer rows. One scan of `xmin` and the count (no row rendered
as text: a tenth of a checksum pass) tells whether the target still holds exactly the
rows that were verified; if so, the next run compares the source with the recorded
checksum instead of hashing the target again.

Whatever is unusual, the record is not used and the run hashes the target live: another
table under the same name (oid), other column names or types, a partitioned or inherited
target, more than 2^30 transactions since (ids wrap at 2^32), or any row version the scan
cannot place. A table compared only in part (a `merge` with `where`, a window) is not
recorded. Doubt costs a checksum pass, never a wrong answer.

Only the target is ever trusted this way. Its record lives in its own database, so a
restore of the target rewinds the record with the rows. A record of the source would
live apart from the source's rows, and a source restored from a disk snapshot reuses
the transaction ids of the span it lost: every run hashes the source (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from psycopg2 import sql

from ..load.staging import STAGING_SCHEMA, create_if_missing
from ..plan.introspect import Column
from ..plan.spec import TableSpec
from .buckets import SLICE_BYTES, Bucketing, BucketSums, read_bucket_sums, stage_bucket_sums
from .verify import ScopeChecksum

RECORD_TABLE = "verified_tables"
RECORD_VERSION = 2  # part of every fingerprint: a new checksum recipe voids old records
# xids are 32 bits and wrap: a record is trusted for at most this many transactions.
MAX_AGE_XIDS = 1 << 30


@dataclass(frozen=True)
class Recorded:
    """A usable record: the table's count and checksum as verified, and when."""

    checksum: ScopeChecksum
    recorded_at: str


# Buckets and their sums live in `buckets.py`; the names stay importable from here.
def fingerprint(columns: Sequence[Column]) -> str:
    """What a recorded checksum is a checksum of: these columns, each hashed as it says,
    over the whole table."""
    text = json.dumps({"v": RECORD_VERSION, "columns": [[c.name, c.hash_as] for c in columns]})
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_record_table(cur) -> None:
    """The record table (in the staging schema, which exists); autocommit."""
    create_if_missing(
        cur,
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " target_schema text NOT NULL, target_table text NOT NULL, table_oid oid NOT NULL,"
            " fingerprint text NOT NULL, shape text NOT NULL,"
            " table_rows bigint NOT NULL, table_checksum numeric NOT NULL,"
            " horizon xid8 NOT NULL, writer xid8 NOT NULL,"
            " bucket_key text, bucket_count integer, bucket_sums bytea,"
            " recorded_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (target_schema, target_table))"
        ).format(sql.Identifier(STAGING_SCHEMA, RECORD_TABLE)),
    )
    # Stored uncompressed (checksums do not compress): a slice of the value is read
    # without decompressing all of it.
    cur.execute(
        "SELECT attstorage <> 'e' FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = 'bucket_sums'",
        (sql.Identifier(STAGING_SCHEMA, RECORD_TABLE).as_string(cur),),
    )
    if cur.fetchone()[0]:
        cur.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN bucket_sums SET STORAGE EXTERNAL").format(
                sql.Identifier(STAGING_SCHEMA, RECORD_TABLE)
            )
        )


# The target's identity and column shape, as the catalog has them now.
_IDENTITY = sql.SQL(
    "SELECT c.oid, c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relispartition,"
    " (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', '"
    "   ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
    "   AND NOT a.attisdropped)"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = %s AND c.relname = %s"
)


def _identity(cur, spec: TableSpec) -> tuple[int, str] | None:
    """(oid, column shape), or None when the target cannot carry a record."""
    cur.execute(_IDENTITY, (spec.target.schema, spec.target.name))
    row = cur.fetchone()
    if row is None or not row[1]:
        return None
    return row[0], row[2]


def take_horizon(cur) -> int:
    """The oldest running transaction now; call right before the verifying statement."""
    cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return cur.fetchone()[0]


def recordable(spec: TableSpec) -> bool:
    """Only a whole-table comparison is recorded: its count comes from the same statement
    (the same snapshot) as its checksum, so no delete can slip between them."""
    return spec.where is None and spec.window is None


def write_record(
    cur,
    spec: TableSpec,
    columns: Sequence[Column],
    horizon: int,
    table: ScopeChecksum,
    buckets: BucketSums | None = None,
) -> None:
    """After the verification of the whole target table (`table`, in the transaction that
    took `horizon` before it): record what it proved, and the table's bucket sums when
    the caller knows them (a differential run: the source's, which the table now equals);
    committed with the run's writes."""
    identity = _identity(cur, spec) if recordable(spec) else None
    if identity is None:
        return
    # The packed sums go in by a binary COPY (`buckets.py`), never as a hex parameter.
    packed = stage_bucket_sums(cur, buckets) if buckets else sql.SQL("NULL::bytea")
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (target_schema, target_table, table_oid, fingerprint, shape, table_rows,"
            " table_checksum, horizon, writer, bucket_key, bucket_count, bucket_sums)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::text::xid8, pg_current_xact_id(), %s, %s, {})"
            " ON CONFLICT (target_schema, target_table) DO UPDATE SET table_oid = EXCLUDED.table_oid,"
            " fingerprint = EXCLUDED.fingerprint, shape = EXCLUDED.shape,"
            " table_rows = EXCLUDED.table_rows, table_checksum = EXCLUDED.table_checksum,"
            " horizon = EXCLUDED.horizon,"
            " writer = EXCLUDED.writer, bucket_key = EXCLUDED.bucket_key,"
            " bucket_count = EXCLUDED.bucket_count, bucket_sums = EXCLUDED.bucket_sums,"
            " recorded_at = EXCLUDED.recorded_at"
        ).format(sql.Identifier(STAGING_SCHEMA, RECORD_TABLE), packed),
        (
            spec.target.schema,
            spec.target.name,
            identity[0],
            fingerprint(columns),
            identity[1],
            table.rows,
            table.checksum,
            str(horizon),
            buckets.bucketing.stored if buckets else None,
            buckets.count if buckets else None,
        ),
    )


def _on_record(cur, spec: TableSpec, template: str, *params) -> None:
    """Run `template` ({} is the record table, `{this}` the target's row) with `params`."""
    statement = sql.SQL(template).format(
        sql.Identifier(STAGING_SCHEMA, RECORD_TABLE), this=sql.SQL("target_schema = %s AND target_table = %s")
    )
    cur.execute(statement, (spec.target.schema, spec.target.name, *params))


def recorded_bucket_count(cur, spec: TableSpec, bucketing: Bucketing) -> int | None:
    """How many buckets the record (usable or not) holds sums for, by `bucketing`; None when
    it holds none (a cheap look: whether the record is usable is `recorded_checksum`)."""
    if not recordable(spec):  # the table exists: every run's staging step makes it
        return None
    template = "SELECT bucket_count FROM {} WHERE {this} AND bucket_key = %s AND bucket_sums IS NOT NULL"
    _on_record(cur, spec, template, bucketing.stored)
    row = cur.fetchone()
    return None if row is None else row[0]


def forget_buckets(cur, spec: TableSpec) -> None:
    """Keep the record's checksum, drop its bucket sums."""
    template = "UPDATE {} SET bucket_key = NULL, bucket_count = NULL, bucket_sums = NULL WHERE {this}"
    _on_record(cur, spec, template)


def recorded_buckets(cur, spec: TableSpec, bucketing: Bucketing) -> BucketSums | None:
    """The bucket sums of a record `recorded_checksum` has just found usable (the run holds
    the table's lock: no other run rewrites the record meanwhile), if it has them by `bucketing`."""
    count = recorded_bucket_count(cur, spec, bucketing)
    if count is None:
        return None
    # Streamed by a binary COPY (`buckets.py`), a slice of whole buckets a row, so that no
    # message holds the whole value; its statement takes literals, not parameters.
    query = sql.SQL(
        "SELECT substring(bucket_sums FROM s FOR {n})"
        " FROM {}, generate_series(1, octet_length(bucket_sums), {n}) s"
        " WHERE target_schema = {} AND target_table = {} AND bucket_key = {} ORDER BY s"
    )
    query = query.format(
        sql.Identifier(STAGING_SCHEMA, RECORD_TABLE),
        sql.Literal(spec.target.schema),
        sql.Literal(spec.target.name),
        sql.Literal(bucketing.stored),
        n=sql.Literal(SLICE_BYTES),
    )
    return read_bucket_sums(cur, query, bucketing, count)


def written_since(horizon: int, other_than: sql.Composable) -> sql.Composed:
    """Filter for row versions stamped from `horizon` on (mod 2^32, within half the id
    space) by a transaction other than `other_than` (an xid). Frozen rows older than 2^31
    ids can alias into that window: they count as written, which only costs a live pass.
    Values as literals: a `%` in a quoted name must not read as a placeholder."""
    return sql.SQL("xmin <> {} AND ((xmin::text::bigint - {}) & 4294967295) < 2147483648").format(
        other_than, sql.Literal(horizon % (1 << 32))
    )


def recorded_checksum(cur, spec: TableSpec, columns: Sequence[Column]) -> Recorded | None:
    """The recorded checksum of the whole target table if it provably still holds the
    verified rows; else None (hash it live)."""
    if not recordable(spec):  # the table exists: every run's staging step makes it
        return None
    _on_record(
        cur,
        spec,
        "SELECT table_oid, fingerprint, shape, table_rows, table_checksum, horizon::text::bigint,"
        " writer::text::bigint, recorded_at::text FROM {} WHERE {this}",
    )
    row = cur.fetchone()
    identity = _identity(cur, spec)
    if row is None or identity is None:
        return None
    oid, print_, shape, table_rows, table_sum, horizon, writer, at = row
    if (oid, shape) != identity or print_ != fingerprint(columns):
        return None
    # Row versions at or after the horizon that are not the recording run's own.
    writer_xid = sql.SQL("{}::xid").format(sql.Literal(str(writer % (1 << 32))))
    cur.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {}").format(
            written_since(horizon, writer_xid), spec.target.ident
        )
    )
    rows, unknown = cur.fetchone()
    cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    age = cur.fetchone()[0] - horizon
    if rows != table_rows or unknown or not 0 <= age < MAX_AGE_XIDS:
        return None
    return Recorded(ScopeChecksum(rows, Decimal(table_sum)), at)
