"""A batch of decoded changes into the target: staged, resolved, applied, verified.

1. **Stage** (`stream.py`): the table's changes from the slot into a changes table.
2. **Resolve** (`toast.py`): values the plugin left out as unchanged TOAST.
3. **Apply**, in the run's one target transaction: after a TRUNCATE (the last one of the
   batch) the target is emptied; per key, the last change decides: the row is upserted
   (MERGE from staging, only changed rows written) or deleted.
4. **Verify** before commit: the target's rows of every key the batch touched equal the
   batch's final rows (count and checksum), and no deleted key is left.
"""

from __future__ import annotations

from contextlib import nullcontext

from psycopg2 import sql

from ..load.merge import KEY_LOOKUP_JOIN, MergeCounts, delete_rows, merge_from_staging
from ..load.staging import STAGING_SCHEMA
from ..plan.introspect import Column
from ..sql import planner_settings
from ..verify.verify import ScopeChecksum, checksum_select
from .stream import OP, SEQ, as_staged, ident, old_name


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
            cols=sql.SQL(", ").join(ident("c", c.name) for c in columns),
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
        sql.SQL("{} = {}").format(ident("l", k.name), as_staged(alias, k)) for k in key
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
