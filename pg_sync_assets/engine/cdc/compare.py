"""The `row_count` and `checksum` checks of a `cdc` table, run on their own (`verify_all`):
the whole target against a source snapshot, without failing on changes in flight.

The target is read in one snapshot with its recorded position A. The source's snapshot
is taken together with its WAL position L (every transaction it sees committed before
L). The changes of the table committed between A and L are read from the slot (not
consumed): the rows of the keys they touch may differ for that reason alone and are left
out on both sides. Every other row has the same value at A and in the snapshot, so the
two sides must be equal; the checks' metadata says how many keys were left out.
"""

from __future__ import annotations

import time
from dataclasses import replace

from psycopg2 import sql

from ..plan.plan import plan_table
from ..plan.spec import TableSpec
from ..sql import key_in, pin_text_settings
from ..verify.verify import TableComparison, source_checksum, target_checksum
from .feed import Feed, read_changes
from .pgoutput import Begin, Delete, Insert, Relation, Truncate, Update, lsn_int, lsn_text
from .state import read_position

MAX_IN_FLIGHT_KEYS = 100_000


def compare_cdc_table(spec: TableSpec, source_conn, target_conn, feed: Feed) -> TableComparison:
    source_conn.rollback()
    target_conn.rollback()
    target_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    try:
        with source_conn.cursor() as scur, target_conn.cursor() as tcur:
            pin_text_settings(tcur)  # the target's snapshot starts here, with its position
            position = read_position(tcur, spec.target)
            pin_text_settings(scur)
            scur.execute("SELECT pg_current_wal_lsn()::text")  # the snapshot, and L
            insert_text = scur.fetchone()[0]
            plan = plan_table(scur, spec)
            columns = plan.columns
            names = tuple(c.name for c in columns)
            if position is None or position.slot != feed.slot:
                return TableComparison(
                    source_checksum(scur, spec, columns),
                    None,
                    names,
                    f"`{spec.target}` holds no position of slot `{feed.slot}`: materialize it first",
                )
            upto = _flushed_past(scur, insert_text)
            if upto is None:
                return TableComparison(
                    source_checksum(scur, spec, columns),
                    None,
                    names,
                    "the source did not flush its WAL up to the snapshot within 10 s (the changes in "
                    "flight cannot all be read yet); check again",
                )
            keys, truncated = _keys_in_flight(scur, spec, plan.key, feed, position.applied_lsn, upto)
            if truncated or len(keys) > MAX_IN_FLIGHT_KEYS:
                return TableComparison(
                    source_checksum(scur, spec, columns),
                    None,
                    names,
                    f"{'a TRUNCATE' if truncated else f'{len(keys)} changed keys'} in flight since the "
                    f"target's position {lsn_text(position.applied_lsn)}: materialize the table (its "
                    "run applies them), then check again",
                )
            scope = spec
            if keys:
                key = plan.key_columns()
                arrays = [sql.Literal([row[i] for row in keys]) for i in range(len(key))]
                scope = replace(spec, window=sql.SQL("NOT ({})").format(key_in(key, arrays)))
            source = source_checksum(scur, scope, columns)
            target = target_checksum(tcur, scope, columns)
            basis = (
                f"the whole table at the target's position {lsn_text(position.applied_lsn)} against a "
                f"source snapshot at {lsn_text(upto)}"
            )
            if keys:
                basis += f", without the {len(keys)} keys changed on the source in between"
            return TableComparison(source, target, names, basis=basis)
    finally:
        source_conn.rollback()
        target_conn.rollback()


def _flushed_past(scur, insert_text: str, timeout: float = 10.0) -> int | None:
    """Wait (briefly) until the WAL up to the snapshot's position is flushed: decoding reads
    only flushed WAL, and a transaction the snapshot sees may not be flushed yet. The
    position, or None when it was not flushed in time."""
    target = lsn_int(insert_text)
    deadline = time.monotonic() + timeout
    while True:
        scur.execute("SELECT pg_current_wal_flush_lsn()::text")
        flushed = lsn_int(scur.fetchone()[0])
        if flushed >= target:
            return target
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _keys_in_flight(
    scur, spec: TableSpec, key: tuple[str, ...], feed: Feed, applied: int, upto: int
) -> tuple[set, bool]:
    """Text keys of the table's rows changed by transactions committed in [applied, upto),
    and whether one of them truncated it."""
    relid, key_at, skip = None, [], True
    keys: set = set()
    for _, msg in read_changes(scur.connection, feed, upto):
        if isinstance(msg, Begin):
            skip = msg.final_lsn < applied
        elif isinstance(msg, Relation):
            if (msg.schema, msg.name) == (spec.source.schema, spec.source.name):
                relid = msg.relid
                at = {c.name: i for i, c in enumerate(msg.columns)}
                key_at = [at[k] for k in key if k in at]
        elif skip:
            continue
        elif isinstance(msg, Truncate) and relid in msg.relids:
            return keys, True
        elif isinstance(msg, (Insert, Update, Delete)) and msg.relid == relid:
            for row in (getattr(msg, "old", None), getattr(msg, "new", None)):
                if row is not None:
                    keys.add(tuple(row[i].decode() if isinstance(row[i], bytes) else None for i in key_at))
    return keys, False
