"""Verify a differential run's final table from what it changed, without hashing it all.

A differential run knows the target's count and checksum before it wrote (pass 1 of the
comparison, read after `horizon` was taken), the old row hashes of the keys it replaces
and deletes (pass 2), and the keys it wrote. After its writes, in the final transaction:
1. one scan of row versions and the count (no row rendered as text): no visible row
   version is from `horizon` on except the run's own, and the count is the old one plus
   the missing rows minus the deleted extra rows;
2. the rows at the written keys are read back by key and hashed (whatever defaults or
   the target made of them is in that hash): every written key is there, and every row
   version the run wrote is at a written key; every deleted key is gone.
Then the table is the old rows less the replaced and deleted ones plus the rows read
back, so its checksum is old − replaced − deleted + read back: exactly what a full pass
gives, compared with the source snapshot's as always.

Only for a whole-table comparison (`record.recordable`) of a table without user triggers
or rules (they could write rows the run did not name). Otherwise, or when any check
above fails, the caller hashes the final table in full.
"""

from __future__ import annotations

from decimal import Decimal

from psycopg2 import sql

from ..compare.key_table import keys_condition
from ..compare.localize import Difference
from ..plan.plan import TablePlan
from ..sql import key_in
from .record import written_since
from .verify import ScopeChecksum, row_hash


def _has_user_triggers_or_rules(cur, spec) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal)"
        " OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (spec.target.schema, spec.target.name),
    )
    row = cur.fetchone()
    return row is None or row[0]


def _keys(plan: TablePlan, diff: Difference, kinds: tuple[str, ...]) -> sql.Composed:
    """The rows whose key `diff` lists as one of `kinds`."""
    if diff.keys_table is not None:
        return keys_condition(plan.key_columns(), diff.keys_table, kinds)
    keys = [k for kind in kinds for k in getattr(diff, kind)]
    texts = diff.key_columns_text(keys, len(plan.key))
    return key_in(plan.key_columns(), [sql.Literal(v) for v in texts])


def delta_checksum(cur, spec, plan: TablePlan, diff: Difference, deleted_extra: bool) -> ScopeChecksum | None:
    """The final table's count and checksum from the changes, or None (hash it in full)."""
    if diff.target_horizon is None or not diff.all_listed:
        return None  # no baseline, or not every key listed
    if _has_user_triggers_or_rules(cur, spec):
        return None
    cur.execute("SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text")
    # Values as literals: a `%` in a quoted name must not read as a placeholder.
    ours = sql.SQL("{}::xid").format(sql.Literal(cur.fetchone()[0]))
    mine_only = sql.SQL("xmin = {}").format(ours)
    cur.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}) FROM {}").format(
            mine_only, written_since(diff.target_horizon, ours), spec.target.ident
        )
    )
    rows, mine, unknown = cur.fetchone()
    extra_gone = diff.extra_count if deleted_extra else 0
    if unknown or rows != diff.target_rows + diff.missing_count - extra_gone:
        return None
    written = diff.missing_count + diff.changed_count
    back_rows, back_sum, back_mine = 0, 0, 0
    if written:
        read_back = sql.SQL(
            "SELECT count(*), COALESCE(sum({}), 0), count(*) FILTER (WHERE {}) FROM {} WHERE {}"
        )
        keys = _keys(plan, diff, ("missing", "changed"))
        cur.execute(read_back.format(row_hash(plan.columns), mine_only, spec.target.ident, keys))
        back_rows, back_sum, back_mine = cur.fetchone()
    if back_rows != written or back_mine != mine:
        return None
    if extra_gone:
        gone = _keys(plan, diff, ("extra",))
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(spec.target.ident, gone))
        if cur.fetchone()[0]:
            return None
    total = diff.target_sum - diff.changed_target_sum - (diff.extra_sum if extra_gone else 0) + int(back_sum)
    return ScopeChecksum(rows, Decimal(total))
