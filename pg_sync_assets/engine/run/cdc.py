"""One run of a `mode: cdc` table: the third way rows enter the engine, after the full
copy and the differential path.

- **First run** (no recorded position, the target missing, its columns to change, or the
  stream describing other columns): the table joins the connection's publication, the
  slot exists, and a temporary slot exports a snapshot whose consistent point is exact:
  every transaction that committed before it is in the snapshot, every later one is in
  the stream. The table is copied from that snapshot as a verified full refresh, and the
  consistent point is recorded as the target's position.
- **Every later run** takes the source's current WAL position as its bound, streams the
  changes of transactions that committed after the recorded position and before the
  bound (`cdc/apply.py`), applies and verifies them, and records the bound, all in one
  target transaction. Only after that commit is the slot advanced, to the lowest
  position any member table has recorded: a run after a crash between the two reads the
  same changes again and skips those at or before its recorded position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from ..cdc.apply import (
    Batch,
    ChangeStream,
    SchemaChanged,
    apply_batch,
    build_last,
    create_changes_table,
    fill_staging,
    last_truncate,
    require_plain_columns,
    resolve_unchanged,
    stage_changes,
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
from ..connect import sibling_session
from ..errors import ConfigError
from ..load.merge import MergeCounts
from ..load.triggers import DISABLE, disable_user_triggers
from ..plan.spec import Mode, TableSpec
from ..plan.target import read_target_shape, require_writable_target
from ..verify.guard import LoadVerification, VerificationError
from .context import (
    Run,
    SyncOptions,
    end_run_transactions,
    final_transaction,
    prepare,
    rollback_quietly,
    staged_run,
)
from .locks import lock_final_table
from .stages import StageTimer
from .sync import SyncResult, sync_table

_log = logging.getLogger("pg_sync_assets")

# Called after a run's commit: the recorded positions of the feed's member tables (this
# one included), so that the slot moves only as far as all of them have applied.
Positions = Callable[[], dict]

SNAPSHOT_COPY = "cdc_snapshot"  # SyncResult.method of a first (or schema-change) copy
APPLIED = "cdc"  # SyncResult.method of a run that applied changes


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
    log, options = log or _log, options or SyncOptions()
    label = str(spec.target)
    timer = StageTimer(label, source_conn, target_conn, log, options.progress_interval)
    plan, copied, changes = prepare(spec, source_conn, target_conn, timer)
    with source_conn.cursor() as scur:
        require_logical(scur, label)
        oid = source_identity(scur, spec, plan)
        expected = relation_columns(scur, spec.source)
        require_plain_columns(label, copied)
        gap = feed_gap(scur, feed, spec.source)
        missing = [c.name for c in copied if c.name not in expected]
        if missing:
            raise ConfigError(
                f"`{label}`: the source's generated column(s) {missing} are not in the change stream; "
                "leave them out with `columns: {exclude: [...]}` (the target can compute them itself)"
            )
    source_conn.rollback()
    with target_conn.cursor() as tcur:
        position = read_position(tcur, spec.target)
        exists = read_target_shape(tcur, spec.target) is not None
    if position is None or position.slot != feed.slot or not exists or changes or gap:
        if position is None or not exists:
            why = "first run"
        elif changes:
            why = "the target's columns change"
        elif position.slot != feed.slot:
            why = f"its position was recorded for slot `{position.slot}`"
        else:
            why = f"{gap}: the changes since the last run cannot be read"
        return _snapshot_copy(spec, source_conn, target_conn, feed, positions, options, log, why)
    run = Run(spec, plan, copied, changes, timer, options, log)
    try:
        return _apply(run, oid, expected, feed, positions, source_conn, target_conn)
    except SchemaChanged as exc:
        log.info(
            "`%s`: the source's columns changed within the changes to apply (%s); copying the table "
            "again from a new snapshot, as `on_schema_change: %s` allows",
            label,
            exc,
            spec.on_schema_change,
        )
        return _snapshot_copy(spec, source_conn, target_conn, feed, positions, options, log, "schema change")


def _snapshot_copy(spec, source_conn, target_conn, feed, positions, options, log, why: str) -> SyncResult:
    label = str(spec.target)
    log.info("`%s`: copying the table from the snapshot of a new replication slot (%s)", label, why)
    writer = sibling_session(source_conn, readonly=False, purpose="change feed")
    try:
        writer.autocommit = True
        with writer.cursor() as wcur:
            require_logical(wcur, label)
            if ensure_publication(wcur, feed, spec.source):
                log.info("`%s`: added `%s` to publication `%s`", label, spec.source, feed.publication)
            if ensure_slot(wcur, feed):
                log.info("`%s`: created replication slot `%s`", label, feed.slot)
            with first_copy_guard(wcur, feed):
                with exported_snapshot(source_conn) as (snapshot, consistent_point):
                    result = sync_table(
                        replace(spec, mode=Mode.FULL_REFRESH),
                        source_conn,
                        target_conn,
                        options=options,
                        log=log,
                        snapshot=snapshot,
                    )
                with target_conn.cursor() as tcur:
                    ensure_state_table(tcur)
                    write_position(tcur, spec.target, feed.slot, consistent_point, result.target_rows)
    finally:
        writer.close()
    log.info(
        "`%s`: copied at position %s; later runs apply the changes after it",
        label,
        lsn_text(consistent_point),
    )
    _advance(source_conn, feed, positions, spec, consistent_point, log)
    return replace(result, mode=Mode.CDC, method=SNAPSHOT_COPY, cdc_position=lsn_text(consistent_point))


def _apply(
    run: Run, oid: int, expected: list[str], feed: Feed, positions, source_conn, target_conn
) -> SyncResult:
    spec, plan, label, timer = run.spec, run.plan, run.label, run.timer
    key = plan.key_columns()
    batch = Batch()
    with staged_run(spec, target_conn, run.copied, timer, run.log) as (run.staging, orphans):
        changes, last = run.staging + "c", run.staging + "l"
        try:
            with source_conn.cursor() as run.scur, target_conn.cursor() as run.tcur:
                scur, tcur = run.scur, run.tcur
                position = read_position(tcur, spec.target)  # again, under the table's lock
                if position is None or position.slot != feed.slot:
                    raise SchemaChanged([], [])  # another run re-copied or reset it: start over
                with timer.stage("read_changes"):
                    source_conn.rollback()
                    bound = max(current_position(scur), position.applied_lsn)
                    target_conn.autocommit = False
                    create_changes_table(tcur, changes, run.copied, key)
                    stream = ChangeStream(
                        oid, expected, run.copied, list(plan.key), position.applied_lsn, batch
                    )
                    stage_changes(scur, tcur, feed, bound, changes, stream, key)
                    target_conn.commit()
                    source_conn.rollback()
                run.log.info(
                    "`%s`: %d changes in %d transactions between %s and %s",
                    label,
                    batch.changes,
                    batch.transactions,
                    lsn_text(position.applied_lsn),
                    lsn_text(bound),
                )
                counts, verification, target_rows = _write(run, batch, changes, last, position, bound, feed)
        finally:
            end_run_transactions(source_conn, target_conn)  # staged_run drops the run's tables
    _advance(source_conn, feed, positions, spec, bound, run.log)
    return SyncResult(
        table=label,
        mode=Mode.CDC,
        rows_copied=batch.changes,
        bytes_copied=batch.bytes,
        **counts.fields(),
        target_rows=target_rows,
        created_target=False,
        plan=plan,
        verification=verification,
        stage_seconds=dict(timer.seconds),
        removed_orphans=orphans,
        method=APPLIED,
        cdc_position=lsn_text(bound),
        cdc_from=lsn_text(position.applied_lsn),
        cdc_transactions=batch.transactions,
    )


def _write(run: Run, batch: Batch, changes: str, last: str, position, bound: int, feed: Feed):
    """The final transaction: apply, verify, record the bound; committed."""
    spec, plan, tcur, timer = run.spec, run.plan, run.tcur, run.timer
    key = plan.key_columns()
    with final_transaction(run.scur, tcur, run.label) as final:
        with timer.stage("merge"):
            tcur.execute("SELECT set_config('work_mem', %s, true)", (run.options.merge_work_mem,))
            shape = read_target_shape(tcur, spec.target)
            if shape is None:
                raise ConfigError(f"`{spec.target}` was dropped during the run; run it again")
            require_writable_target(spec.target, shape, spec.mode, plan.key)
            lock_final_table(tcur, spec, "ROW EXCLUSIVE")
            if spec.target_triggers == DISABLE:
                disable_user_triggers(tcur, spec.target)
            counts, rows = MergeCounts(0, 0, 0, APPLIED), 0
            after = 0
            if batch.changes:
                after = last_truncate(tcur, changes)
                if batch.unchanged_columns:
                    resolve_unchanged(
                        tcur, changes, spec.target, run.copied, key, after, batch.unchanged_columns
                    )
                build_last(tcur, changes, last, key, after)
                rows = fill_staging(tcur, changes, last, run.staging, run.copied)
                counts = apply_batch(
                    tcur, spec.target, run.staging, last, run.copied, key, rows, shape, after > 0
                )
        verification = None
        with timer.stage("verify_final"):
            if batch.changes:
                verification = _verify(run, last, after > 0, bound, shape)
        # After a TRUNCATE the table holds exactly the batch's rows; else the recorded count moves.
        target_rows = rows if after else position.target_rows + counts.inserted - counts.deleted
        write_position(tcur, spec.target, feed.slot, bound, target_rows)
        with timer.stage("commit"):
            final.commit()
    return counts, verification, target_rows


def _verify(run: Run, last: str, truncated: bool, bound: int, shape) -> LoadVerification:
    key = run.plan.key_columns()
    expected, found, left = verify_batch(
        run.tcur, run.spec.target, run.staging, last, run.copied, key, truncated, shape
    )
    if expected != found or left:
        raise VerificationError(
            run.label,
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


def _advance(source_conn, feed: Feed, positions: Positions | None, spec: TableSpec, mine: int, log) -> None:
    """Move the slot to the lowest recorded position of the feed's tables (after this run's
    commit). A failure here loses nothing: the next run reads those changes again."""
    try:
        known = positions() if positions is not None else {}
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
