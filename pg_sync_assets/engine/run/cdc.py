"""One run of a `mode: cdc` table: the third way rows enter the engine, after the full
copy and the differential path.

- **First run** (no recorded position, the target missing, its columns to change, or the
  stream describing other columns): the table joins the connection's publication, the
  slot exists, and a temporary slot exports a snapshot whose consistent point is exact:
  every transaction that committed before it is in the snapshot, every later one is in
  the stream. The table is copied from that snapshot as a verified full refresh, and the
  consistent point is recorded as the target's position.
- **A snapshot group** of `cdc` tables does both for all its members together: one
  snapshot for their first copy (the group's copy, one transaction), and one bound for
  every later run, whose changes are all applied in one target transaction (upserts
  parents first, deletes children first), so the target holds one moment of the source.
- **Every later run** takes the source's flushed WAL position as its bound, streams the
  changes of transactions that committed after the recorded position and before the
  bound (`cdc/stream.py`), applies and verifies them (`cdc/toast.py`, `cdc/apply.py`),
  and records the bound, all in one target transaction. Only after that commit is the
  slot advanced, to the lowest position any member table has recorded: a run after a
  crash between the two reads the same changes again and skips those at or before its
  recorded position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

from ..cdc.apply import (
    build_last,
    delete_batch,
    empty_table,
    fill_staging,
    last_truncate,
    upsert_batch,
    verify_batch,
)
from ..cdc.feed import (
    Feed,
    advance,
    current_position,
    ensure_publication,
    ensure_slot,
    exported_snapshot,
    feed_gap,
    first_copy_guard,
    require_logical,
)
from ..cdc.identity import relation_columns, source_identity
from ..cdc.pgoutput import lsn_text
from ..cdc.state import ensure_state_table, read_position, write_position
from ..cdc.stream import (
    Batch,
    ChangeStream,
    SchemaChanged,
    create_changes_table,
    require_plain_columns,
    stage_changes,
)
from ..cdc.toast import resolve_unchanged
from ..connect import sibling_session
from ..errors import ConfigError
from ..load.merge import MergeCounts
from ..plan.spec import Mode, TableSpec
from ..plan.target import read_target_shape
from ..verify.guard import LoadVerification, VerificationError
from .context import (
    Run,
    SyncOptions,
    end_run_transactions,
    final_transaction,
    open_for_changes,
    prepare,
    rollback_quietly,
    staged_run,
)
from .group import sync_group, write_order
from .stages import StageTimer
from .sync import SyncResult, sync_table

_log = logging.getLogger("pg_sync_assets")

# Called after a run's commit: the recorded positions of the feed's member tables (this
# one included), so that the slot moves only as far as all of them have applied.
Positions = Callable[[], dict]

SNAPSHOT_COPY = "cdc_snapshot"  # SyncResult.method of a first (or schema-change) copy
APPLIED = "cdc"  # SyncResult.method of a run that applied changes


@dataclass
class _Member(Run):
    """One `cdc` table of a run: its run, what the feed says of it, and what it applied."""

    oid: int = 0
    expected: list[str] = field(default_factory=list)  # the columns the stream carries
    gap: str | None = None
    position: object = None
    exists: bool = False
    orphans: tuple[str, ...] = ()
    batch: Batch = field(default_factory=Batch)
    after: int = 0  # the batch's last TRUNCATE, if any
    rows: int = 0  # rows present after the batch (staged)
    shape: object = None
    counts: MergeCounts = field(default_factory=lambda: MergeCounts(0, 0, 0, APPLIED))
    verification: LoadVerification | None = None
    target_rows: int = 0

    @property
    def changes_table(self) -> str:
        return self.staging + "c"

    @property
    def last_table(self) -> str:
        return self.staging + "l"

    def copy_reason(self, feed: Feed) -> str | None:
        """Why this table is copied from a snapshot instead of applying changes, or None."""
        if self.position is None or not self.exists:
            return "first run"
        if self.changes:
            return "the target's columns change"
        if self.position.slot != feed.slot:
            return f"its position was recorded for slot `{self.position.slot}`"
        if self.gap:
            return f"{self.gap}: the changes since the last run cannot be read"
        return None


def sync_cdc_table(
    spec: TableSpec,
    source_conn,
    target_conn,
    *,
    feed: Feed,
    positions: Positions | None = None,
    options: SyncOptions | None = None,
    log: logging.Logger | None = None,
) -> SyncResult:
    """One `cdc` table's run; see the module docstring."""
    return sync_cdc_group(
        [spec], source_conn, target_conn, feed=feed, positions=positions, options=options, log=log
    )[0]


def sync_cdc_group(
    specs: list[TableSpec],
    source_conn,
    target_conn,
    *,
    feed: Feed,
    positions: Positions | None = None,
    options: SyncOptions | None = None,
    log: logging.Logger | None = None,
) -> list[SyncResult]:
    """`cdc` tables read as one (a snapshot group, or one table); results in `specs` order."""
    log, options = log or _log, options or SyncOptions()
    members = [_plan(spec, source_conn, target_conn, feed, options, log) for spec in specs]
    reasons = [r for r in (m.copy_reason(feed) for m in members) if r]
    if reasons:
        return _snapshot_copy(members, source_conn, target_conn, feed, positions, options, log, reasons[0])
    try:
        return _apply(members, feed, positions, source_conn, target_conn)
    except SchemaChanged as exc:
        log.info(
            "%s: the source's columns changed within the changes to apply (%s); copying again from a "
            "new snapshot, as `on_schema_change` allows",
            ", ".join(f"`{m.label}`" for m in members),
            exc,
        )
        return _snapshot_copy(
            members, source_conn, target_conn, feed, positions, options, log, "schema change"
        )


def _plan(spec: TableSpec, source_conn, target_conn, feed: Feed, options: SyncOptions, log) -> _Member:
    label = str(spec.target)
    timer = StageTimer(label, source_conn, target_conn, log, options.progress_interval)
    plan, copied, changes = prepare(spec, source_conn, target_conn, timer)
    member = _Member(spec, plan, copied, changes, timer, options, log)
    with source_conn.cursor() as scur:
        require_logical(scur, label)
        member.oid = source_identity(scur, spec, plan)
        member.expected = relation_columns(scur, spec.source)
        require_plain_columns(label, copied)
        member.gap = feed_gap(scur, feed, spec.source)
        missing = [c.name for c in copied if c.name not in member.expected]
        if missing:
            raise ConfigError(
                f"`{label}`: the source's generated column(s) {missing} are not in the change stream; "
                "leave them out with `columns: {exclude: [...]}` (the target can compute them itself)"
            )
    source_conn.rollback()
    with target_conn.cursor() as tcur:
        member.position = read_position(tcur, spec.target)
        member.exists = read_target_shape(tcur, spec.target) is not None
    return member


def _snapshot_copy(
    members, source_conn, target_conn, feed, positions, options, log, why: str
) -> list[SyncResult]:
    labels = ", ".join(f"`{m.label}`" for m in members)
    log.info("%s: copying from the snapshot of a new replication slot (%s)", labels, why)
    specs = [replace(m.spec, mode=Mode.FULL_REFRESH) for m in members]
    writer = sibling_session(source_conn, readonly=False, purpose="change feed")
    try:
        writer.autocommit = True
        with writer.cursor() as wcur:
            require_logical(wcur, labels)
            for m in members:
                if ensure_publication(wcur, feed, m.spec.source):
                    log.info("`%s`: added `%s` to publication `%s`", m.label, m.spec.source, feed.publication)
            if ensure_slot(wcur, feed):
                log.info("%s: created replication slot `%s`", labels, feed.slot)
            with first_copy_guard(wcur, feed):
                with exported_snapshot(source_conn) as (snapshot, consistent_point):
                    if len(specs) == 1:
                        results = [
                            sync_table(
                                specs[0],
                                source_conn,
                                target_conn,
                                options=options,
                                log=log,
                                snapshot=snapshot,
                            )
                        ]
                    else:
                        results = sync_group(
                            specs, source_conn, target_conn, options=options, log=log, snapshot=snapshot
                        )
                with target_conn.cursor() as tcur:
                    ensure_state_table(tcur)
                    for m, result in zip(members, results, strict=True):
                        write_position(tcur, m.spec.target, feed.slot, consistent_point, result.target_rows)
    finally:
        writer.close()
    log.info(
        "%s: copied at position %s; later runs apply the changes after it", labels, lsn_text(consistent_point)
    )
    _advance(source_conn, feed, positions, [m.spec for m in members], consistent_point, log)
    position = lsn_text(consistent_point)
    return [replace(r, mode=Mode.CDC, method=SNAPSHOT_COPY, cdc_position=position) for r in results]


def _apply(members: list[_Member], feed: Feed, positions, source_conn, target_conn) -> list[SyncResult]:
    with ExitStack() as stack:
        for m in sorted(members, key=lambda m: m.label):  # locks in one order, as groups take them
            m.staging, m.orphans = stack.enter_context(
                staged_run(m.spec, target_conn, m.copied, m.timer, m.log)
            )
        try:
            with source_conn.cursor() as scur, target_conn.cursor() as tcur:
                for m in members:
                    m.scur, m.tcur = scur, tcur
                    m.position = read_position(tcur, m.spec.target)  # again, under the table's lock
                    if m.position is None or m.position.slot != feed.slot:
                        raise SchemaChanged([], [])  # another run re-copied or reset it: start over
                source_conn.rollback()
                bound = max(current_position(scur), *(m.position.applied_lsn for m in members))
                for m in members:
                    _stage(m, feed, bound, source_conn, target_conn)
                _write(members, bound, feed, tcur)
        finally:
            end_run_transactions(source_conn, target_conn)  # staged_run drops the runs' tables
    _advance(source_conn, feed, positions, [m.spec for m in members], bound, members[0].log)
    return [_result(m, bound) for m in members]


def _stage(m: _Member, feed: Feed, bound: int, source_conn, target_conn) -> None:
    """The member's changes between its position and `bound`, into its changes table."""
    with m.timer.stage("read_changes"):
        source_conn.rollback()
        target_conn.autocommit = False
        key = m.plan.key_columns()
        create_changes_table(m.tcur, m.changes_table, m.copied, key)
        stream = ChangeStream(m.oid, m.expected, m.copied, list(m.plan.key), m.position.applied_lsn, m.batch)
        stage_changes(m.scur, m.tcur, feed, bound, m.changes_table, stream, key)
        target_conn.commit()
        source_conn.rollback()
    m.log.info(
        "`%s`: %d changes in %d transactions between %s and %s",
        m.label,
        m.batch.changes,
        m.batch.transactions,
        lsn_text(m.position.applied_lsn),
        lsn_text(bound),
    )


def _write(members: list[_Member], bound: int, feed: Feed, tcur) -> None:
    """The final transaction: every member's changes applied (upserts parents first,
    deletes children first), verified and its bound recorded; committed."""
    order = write_order(members, tcur) if len(members) > 1 else members
    labels = ", ".join(m.label for m in members)
    with final_transaction(members[0].scur, tcur, labels) as final:
        for m in order:
            with m.timer.stage("merge"):
                _prepare_write(m)
                if len(members) == 1:  # a single table: deletes first (a unique value may move)
                    _delete(m)
                _upsert(m)
        if len(members) > 1:
            for m in reversed(order):
                with m.timer.stage("merge"):
                    _delete(m)
        for m in members:
            with m.timer.stage("verify_final"):
                if m.batch.changes:
                    m.verification = _verify(m, bound)
            # After a TRUNCATE the table holds exactly the batch's rows; else the count moves.
            m.target_rows = (
                m.rows if m.after else m.position.target_rows + m.counts.inserted - m.counts.deleted
            )
            write_position(tcur, m.spec.target, feed.slot, bound, m.target_rows)
        with members[0].timer.stage("commit"):
            final.commit()


def _prepare_write(m: _Member) -> None:
    """In the final transaction: the table's lock and shape, its changes resolved and
    reduced to one final state per key (`last`), the present rows staged."""
    spec, tcur, key = m.spec, m.tcur, m.plan.key_columns()
    m.shape = open_for_changes(tcur, spec, m.plan.key, m.options.merge_work_mem)
    if not m.batch.changes:
        return
    m.after = last_truncate(tcur, m.changes_table)
    if m.batch.unchanged_columns:
        resolve_unchanged(
            tcur, m.changes_table, spec.target, m.copied, key, m.after, m.batch.unchanged_columns
        )
    build_last(tcur, m.changes_table, m.last_table, key, m.after)
    m.rows = fill_staging(tcur, m.changes_table, m.last_table, m.staging, m.copied)
    if m.after:
        m.counts = MergeCounts(0, 0, empty_table(tcur, spec.target, m.shape), APPLIED)


def _delete(m: _Member) -> None:
    if not m.batch.changes:
        return
    deleted = delete_batch(m.tcur, m.spec.target, m.last_table, m.plan.key_columns(), m.shape, m.after)
    m.counts = MergeCounts(m.counts.inserted, m.counts.updated, m.counts.deleted + deleted.deleted, APPLIED)


def _upsert(m: _Member) -> None:
    if not m.batch.changes:
        return
    upserted = upsert_batch(
        m.tcur,
        m.spec.target,
        m.staging,
        m.last_table,
        m.copied,
        m.plan.key_columns(),
        m.rows,
        m.shape,
        m.after > 0,
    )
    m.counts = MergeCounts(upserted.inserted, upserted.updated, m.counts.deleted, APPLIED)


def _verify(m: _Member, bound: int) -> LoadVerification:
    key = m.plan.key_columns()
    truncated = m.after > 0
    expected, found, left = verify_batch(
        m.tcur, m.spec.target, m.staging, m.last_table, m.copied, key, truncated, m.shape
    )
    if expected != found or left:
        raise VerificationError(
            m.label,
            "verify_final",
            f"after applying the changes, the target's rows of the keys they touched do not match "
            f"them ({found.rows} rows, checksum {found.checksum_hex}; expected {expected.rows}, "
            f"{expected.checksum_hex}; {left} deleted keys still present); nothing was committed; "
            "check the target's triggers and rules",
            side="target",
        )
    scope = (
        "the whole table (the changes included a TRUNCATE)"
        if truncated
        else f"the {expected.rows} rows of the keys the changes touched"
    )
    return LoadVerification(expected, found, f"{scope}, against the source's rows as of {lsn_text(bound)}")


def _result(m: _Member, bound: int) -> SyncResult:
    return SyncResult(
        table=m.label,
        mode=Mode.CDC,
        rows_copied=m.batch.changes,
        bytes_copied=m.batch.bytes,
        **m.counts.fields(),
        target_rows=m.target_rows,
        created_target=False,
        plan=m.plan,
        verification=m.verification,
        stage_seconds=dict(m.timer.seconds),
        removed_orphans=m.orphans,
        method=APPLIED,
        cdc_position=lsn_text(bound),
        cdc_from=lsn_text(m.position.applied_lsn),
        cdc_transactions=m.batch.transactions,
    )


def _advance(
    source_conn, feed: Feed, positions: Positions | None, specs: list[TableSpec], mine: int, log
) -> None:
    """Move the slot to the lowest recorded position of the feed's tables (after this run's
    commit). A failure here loses nothing: the next run reads those changes again."""
    try:
        known = positions() if positions is not None else {}
        for spec in specs:
            known[spec.target] = max(known.get(spec.target, 0), mine)
        floor = min(known.values())
        source_conn.rollback()
        with source_conn.cursor() as scur:
            moved = advance(scur, feed, floor)
        source_conn.rollback()
        if moved is None:
            log.info(
                "slot `%s` not advanced now (a first copy holds it); the next run advances it", feed.slot
            )
    except Exception as exc:  # noqa: BLE001 - the target is committed; this is housekeeping
        rollback_quietly(source_conn)
        log.warning("slot `%s` not advanced (%s); the next run advances it", feed.slot, exc)
