"""One table sync, start to end: plan, lock, stage, copy, merge, clean up.

The target connection holds the table's advisory lock for the whole run. The staging
table is created and filled in transactions of their own (so it is visible to other
sessions); every change to the final table, including creating it, happens in one
last transaction. Whatever fails, the final table is exactly as before, the staging
table is dropped (or, if the process dies, dropped by the next run), and the error
names the table and the stage.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..compare.differential import (
    DifferentialStats,
    compare_logged,
    compared_sums,
    eligible,
    full_copy_sums,
    stats,
)
from ..compare.differential_write import run_differential
from ..compare.localize import Difference
from ..load.copy import CopyProgress, CopyResult, source_copy_statement, staging_copy_statement, stream_copy
from ..load.ddl import create_target_table
from ..load.first_load import load_new_table, loads_directly
from ..load.merge import (
    DIFFERENTIAL,
    MERGED,
    TRUNCATE_INSERT,
    MergeCounts,
    delete_missing,
    merge_from_staging,
    replace_from_staging,
    require_unique_staged_keys,
)
from ..load.parallel_copy import copy_workers, parallel_copy
from ..load.staging import STAGING_SCHEMA
from ..load.triggers import DISABLE, disable_user_triggers
from ..plan.cursor import above, integer_cursor_floor
from ..plan.evolve import SchemaChange, apply_schema_changes
from ..plan.introspect import Column
from ..plan.plan import TablePlan
from ..plan.spec import Mode, TableSpec
from ..plan.target import TargetShape, read_target_shape, require_writable_target
from ..plan.window import Window, hour_bucket, partition_key, window_condition
from ..sql import estimate_rows, source_scope
from ..verify.buckets import BucketSums
from ..verify.guard import (
    WHOLE_SCOPE,
    LoadVerification,
    check_full_copy,
    on_source_meanwhile,
)
from ..verify.record import recordable, take_horizon, write_record
from ..verify.verify import ScopeChecksum
from .context import (
    Run,
    SyncOptions,
    end_run_transactions,
    final_transaction,
    prepare,
    rollback_quietly,
    staged_run,
)
from .locks import limit_lock_wait, lock_final_table
from .progress import copy_line
from .stages import StageTimer

_log = logging.getLogger("pg_sync_assets")
DEFAULT_OPTIONS = SyncOptions()


@dataclass(frozen=True)
class SyncResult:
    table: str
    mode: Mode
    rows_copied: int
    bytes_copied: int
    inserted: int
    updated: int
    deleted: int
    target_rows: int
    created_target: bool
    plan: TablePlan
    verification: LoadVerification | None = None
    difference: Difference | None = None  # what a reconcile found and repaired
    stage_seconds: dict[str, float] = field(default_factory=dict)
    removed_orphans: tuple[str, ...] = ()
    window: Window | None = None
    lookback: int = 0  # hours the compared window starts before `window`
    method: str = MERGED  # how the final table changed: merge, keyed_refresh, truncate_insert
    hour_counts: dict[str, int] = field(default_factory=dict)  # partition key -> rows copied
    null_cursor_rows: int | None = None  # rows no window can reach (incremental column NULL)
    differential: DifferentialStats | None = None  # what the comparison before the copy found
    schema_changes: tuple[str, ...] = ()  # what `on_schema_change` changed in the target
    cursor_after: int | None = None  # an integer cursor's floor: rows above it were synced
    copy_workers: int = 1  # sessions a side that copied the rows (`parallel`)
    cdc_position: str | None = None  # `mode: cdc`: the source position the target now holds
    cdc_from: str | None = None  # `mode: cdc`: the position the run's changes start after
    cdc_transactions: int = 0  # `mode: cdc`: source transactions the run applied
    target_location: tuple | None = None  # (host, port, database) of the target session

    @property
    def copy_rows_per_second(self) -> float:
        seconds = self.stage_seconds.get("copy", 0.0)
        return self.rows_copied / seconds if seconds > 0 else 0.0


def open_final_table(
    cur, spec: TableSpec, plan: TablePlan, changes: list[SchemaChange], work_mem: str
) -> tuple[TargetShape, bool]:
    """In the final transaction: create the target, or check it, lock it and apply the
    planned schema changes; (its shape, whether it was created)."""
    cur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
    shape = read_target_shape(cur, spec.target)
    if shape is None:
        # Creating the table takes no lock anyone else waits for.
        limit_lock_wait(cur, spec.lock_timeout)
        create_target_table(cur, spec.target, list(plan.columns), plan.key, spec.incremental_column)
        return read_target_shape(cur, spec.target), True
    require_writable_target(spec.target, shape, spec.mode, plan.key)
    truncates = spec.mode is Mode.FULL_REFRESH and not shape.referenced_by
    # ALTER TABLE takes ACCESS EXCLUSIVE: take it in the lock's short tries, not by upgrading.
    lock_final_table(cur, spec, "ACCESS EXCLUSIVE" if truncates or changes else "ROW EXCLUSIVE")
    if spec.target_triggers == DISABLE:
        disable_user_triggers(cur, spec.target)
    apply_schema_changes(cur, changes)
    return shape, False


def _apply(run: Run, rows: int) -> tuple[MergeCounts, bool, int]:
    """The final transaction's statements; the caller commits or rolls back."""
    cur, spec, plan, staging, copied = run.tcur, run.spec, run.plan, run.staging, run.copied
    options, changes = run.options, run.changes
    shape, created = open_final_table(cur, spec, plan, changes, options.merge_work_mem)
    if spec.mode is Mode.FULL_REFRESH:
        counts = replace_from_staging(cur, spec.target, staging, copied, plan.key_columns(), rows, shape)
        if counts.method == TRUNCATE_INSERT:  # the table holds exactly what was inserted
            return counts, created, counts.inserted
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
        return counts, created, cur.fetchone()[0]
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
    counts = merge_from_staging(cur, spec.target, staging, copied, plan.key_columns(), rows, shape)
    if spec.delete_missing:
        gone = delete_missing(cur, spec, staging, plan.key_columns(), shape)
        counts = MergeCounts(counts.inserted, counts.updated, gone)
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
    return counts, created, cur.fetchone()[0]


def sync_table(
    spec: TableSpec,
    source_conn,
    target_conn,
    *,
    options: SyncOptions = DEFAULT_OPTIONS,
    log: logging.Logger | None = None,
    window: Window | None = None,
    snapshot: str | None = None,
) -> SyncResult:
    """Copy the source scope of `spec` into its target table; see the module docstring.

    With `window`, only the rows whose `incremental_column` falls in it (widened back by
    `lookback` hours) are copied and upserted, and everything is verified over that scope.
    With `snapshot` (an exported snapshot), the run reads the source as of that snapshot.
    """
    log = log or _log
    timer = StageTimer(str(spec.target), source_conn, target_conn, log, options.progress_interval)
    plan, copied, changes = prepare(spec, source_conn, target_conn, timer, snapshot)
    cursor_column, cursor_after = None, None
    if window is not None:
        cursor_column = next(c for c in plan.columns if c.name == spec.incremental_column)
        spec = replace(spec, window=window_condition(cursor_column, window, spec.timezone, spec.lookback))
    elif spec.by_integer_cursor:
        cursor_after = integer_cursor_floor(target_conn, spec)
        if cursor_after is not None:
            spec = replace(spec, window=above(spec.incremental_column, cursor_after))
    run = Run(spec, plan, copied, changes, timer, options, log)
    with staged_run(spec, target_conn, copied, timer, log) as (run.staging, orphans):
        with source_conn.cursor() as run.scur, target_conn.cursor() as run.tcur:
            result, diff = None, None
            if eligible(spec, plan, window) and not changes:  # a changed shape: copy it all
                result, diff = _differential(run)
            if result is None:
                result = _copy_and_apply(run, cursor_column, diff)
                result["differential"] = stats(diff) if diff is not None else None
    return SyncResult(
        **result,
        plan=plan,
        stage_seconds=dict(timer.seconds),
        removed_orphans=orphans,
        window=window,
        lookback=spec.lookback if window is not None else 0,
        schema_changes=tuple(c.description for c in changes),
        cursor_after=cursor_after,
    )


def _differential(run: Run):
    """(result, None) when the differing rows alone were synced; (None, the comparison or
    None) when the full copy must run: the target is empty, or too much of it differs."""
    try:
        diff = compare_logged(run)
    except BaseException:
        end_run_transactions(run.scur.connection, run.target_conn)
        raise
    # The fallbacks keep the source's snapshot open: the full copy reads the same one.
    if diff is None or diff.abandoned:
        return None, diff
    try:
        result = run_differential(run, diff)
    finally:
        end_run_transactions(run.scur.connection, run.target_conn)
    return {**result, "method": DIFFERENTIAL}, None


def _hour_counts(spec: TableSpec, tcur, staging: str, column: Column) -> dict[str, int]:
    """Rows copied per partition hour (from staging: exactly what was copied)."""
    tcur.execute(
        sql.SQL("SELECT {} AS h, count(*) FROM {} GROUP BY h").format(
            hour_bucket(column, spec.timezone), sql.Identifier(STAGING_SCHEMA, staging)
        )
    )
    return {partition_key(hour): n for hour, n in tcur.fetchall() if hour is not None}


def _null_cursor_rows(spec: TableSpec, scur) -> int:
    """Source rows in scope whose cursor is NULL (same snapshot as the copy): no run loads them."""
    is_null = sql.SQL("{} IS NULL").format(sql.Identifier(spec.incremental_column))
    scur.execute(source_scope(replace(spec, window=None), sql.SQL("count(*)"), is_null))
    return scur.fetchone()[0]


def verify_full_copy(run: Run, expected: ScopeChecksum, buckets: BucketSums | None) -> LoadVerification:
    """In the final transaction: the final table against the snapshot's sums, recorded
    (with the bucket sums, when known) if the whole table was compared."""
    spec, plan, tcur = run.spec, run.plan, run.tcur
    horizon = take_horizon(tcur) if recordable(spec) else None
    key = plan.key_columns()
    verification = check_full_copy(run.scur, tcur, spec, plan.columns, run.staging, key, run.copied, expected)
    if horizon is not None and verification.final_scope == WHOLE_SCOPE:
        write_record(tcur, spec, plan.columns, horizon, verification.final, buckets)
    return verification


def _first_load(run: Run, report) -> dict:
    """`first_load.load_new_table`: no staging write for a table that does not exist yet."""
    try:
        copied_result, counts, verification = load_new_table(
            run, lambda rows: full_copy_sums(run.scur, run.spec, run.plan, rows), report
        )
    finally:
        end_run_transactions(run.scur.connection, run.target_conn)
    return _full_copy_result(run, copied_result, counts, copied_result.rows, True, verification)


def _full_copy_result(
    run: Run, copied: CopyResult, counts: MergeCounts, target_rows: int, created: bool, verification, **more
) -> dict:
    """SyncResult fields of a full copy (the staged one, or a first load)."""
    return dict(
        table=run.label,
        mode=run.spec.mode,
        rows_copied=copied.rows,
        bytes_copied=copied.bytes,
        **counts.fields(),
        method=counts.method,
        target_rows=target_rows,
        created_target=created,
        verification=verification,
        **more,
    )


def _copy_and_apply(run: Run, cursor_column: Column | None, compared) -> dict:
    """The full copy; `compared` is the comparison that gave up on the differential path
    (its source sums, from the same snapshot, are the verification's)."""
    spec, plan, staging, copied, timer = run.spec, run.plan, run.staging, run.copied, run.timer
    scur, tcur, label, target_conn, options = run.scur, run.tcur, run.label, run.target_conn, run.options

    with timer.stage("estimate"):  # the copy's expected rows, and how many sessions copy them
        expected = estimate_rows(scur, spec)
        workers, pages = copy_workers(scur, spec, expected) if cursor_column is None else (1, 0)

    def report(p: CopyProgress) -> None:
        run.log.info("%s", copy_line(label, p, expected))

    if cursor_column is None and compared is None and loads_directly(spec, copied, tcur):
        return _first_load(run, report)
    try:
        with timer.stage("copy", heartbeat=False):
            target_conn.autocommit = False
            if workers > 1:
                copied_result = parallel_copy(run, workers, pages, report)
            else:
                tcur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
                copied_result = stream_copy(
                    scur,
                    tcur,
                    source_copy_statement(spec, copied),
                    staging_copy_statement(staging, copied),
                    on_progress=report,
                    progress_interval=options.progress_interval,
                )
            target_conn.commit()
        hour_counts, null_rows = {}, None
        if cursor_column is not None or spec.by_integer_cursor:
            with timer.stage("window_counts"):
                if cursor_column is not None:
                    hour_counts = _hour_counts(spec, tcur, staging, cursor_column)
                null_rows = _null_cursor_rows(spec, scur)
                target_conn.rollback()
        with ExitStack() as meanwhile:
            if spec.verify and compared is None:  # summed on the source while the target merges
                sums = on_source_meanwhile(scur, full_copy_sums, scur, spec, plan, copied_result.rows)
                source_sums = meanwhile.enter_context(sums)
            final = meanwhile.enter_context(final_transaction(scur, tcur, label))
            with timer.stage("merge"):
                try:
                    counts, created, target_rows = _apply(run, copied_result.rows)
                except (pg_errors.CardinalityViolation, pg_errors.UniqueViolation):
                    # A unique index that is not the key, or a full refresh's rebuilt key index.
                    rollback_quietly(target_conn)
                    require_unique_staged_keys(tcur, spec.target, staging, plan.key_columns())
                    raise
            verification = None
            if spec.verify:
                with timer.stage("verify_source"):  # what the merge did not cover
                    expected, buckets = (
                        compared_sums(spec, plan, compared) if compared is not None else source_sums.result()
                    )
                with timer.stage("verify_final"):
                    verification = verify_full_copy(run, expected, buckets)
            with timer.stage("commit"):
                final.commit()
    finally:
        end_run_transactions(scur.connection, target_conn)
    return _full_copy_result(
        run,
        copied_result,
        counts,
        target_rows,
        created,
        verification,
        hour_counts=hour_counts,
        null_cursor_rows=null_rows,
        copy_workers=workers,
    )
