"""Differential sync, second half: copy, write and verify what a comparison found
(`differential.compare`), in the run's snapshot and its one final transaction.

Only the missing and changed rows are copied into staging and upserted; the rows only
in the target are deleted where the mode deletes; the final table is verified against
the snapshot's checksum, from the changes where `delta_verify` can prove them the only
ones. `run_differential` does all of it for one table; a snapshot group calls the steps
itself, to order its members' writes by foreign key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

from psycopg2 import sql

from ..load.copy import source_copy_statement, staging_copy_statement, stream_copy
from ..load.merge import DIFFERENTIAL, MergeCounts, delete_keys, delete_rows, merge_from_staging
from ..load.staging import STAGING_SCHEMA
from ..plan.plan import TablePlan
from ..plan.spec import Mode, TableSpec
from ..plan.target import TargetShape
from ..run.context import final_transaction, open_for_changes, require_read_only_source
from ..sql import key_in, pin_text_settings
from ..verify.delta_verify import delta_checksum
from ..verify.guard import LoadVerification, require_final_equal
from ..verify.record import forget_buckets, recordable, take_horizon, write_record
from ..verify.verify import ScopeChecksum, target_checksum
from .differential import FROM_CHANGES, deletes_extra_rows, expected_sums, stats, target_side
from .key_table import keys_condition, listed_keys
from .localize import Difference


def copy_differing_rows(run, diff: Difference) -> tuple[int, int]:
    """Copy the source rows of the missing and changed keys into staging; (rows, bytes)."""
    spec, plan, copied, staging, scur, tcur = run.spec, run.plan, run.copied, run.staging, run.scur, run.tcur
    tcur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
    rows = bytes_ = 0
    for texts in _keys_to_copy(diff, tcur.connection, len(plan.key)):
        # COPY takes no bind parameters: the keys go in as a quoted literal, a batch at a time.
        only = key_in(plan.key_columns(), [sql.Literal(v) for v in texts])
        done = stream_copy(
            scur, tcur, source_copy_statement(spec, copied, only), staging_copy_statement(staging, copied)
        )
        rows, bytes_ = rows + done.rows, bytes_ + done.bytes
    tcur.connection.commit()
    return rows, bytes_


def _keys_to_copy(diff: Difference, target_conn, width: int) -> Iterator[list[list[str]]]:
    """The missing and changed keys, in batches (one text list per key column)."""
    if diff.keys_table is not None:
        yield from listed_keys(target_conn, diff.keys_table, ("missing", "changed"), width)
        return
    to_copy = diff.missing + diff.changed
    if to_copy:
        yield diff.key_columns_text(to_copy, width)


def upsert_differing_rows(run, rows: int) -> tuple[MergeCounts, TargetShape]:
    """In the open final transaction: upsert the staged rows; (counts, the table's shape)."""
    spec, plan, copied, staging, tcur = run.spec, run.plan, run.copied, run.staging, run.tcur
    pin_text_settings(tcur)  # key texts must render as localize saw them
    if rows:  # the planner's row estimate decides between index lookups and a scan
        tcur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
    shape = open_for_changes(tcur, spec, plan.key, run.options.merge_work_mem)
    counts = (
        merge_from_staging(tcur, spec.target, staging, copied, plan.key_columns(), rows, shape)
        if rows
        else MergeCounts(0, 0, 0)
    )
    return replace(counts, method=DIFFERENTIAL), shape


def delete_extra_keys(run, diff: Difference, shape: TargetShape) -> int:
    """In the open final transaction, after the upsert: delete the keys only the target has."""
    if diff.keys_table is not None:
        if not diff.extra_count:
            return 0
        condition = keys_condition(run.plan.key_columns(), diff.keys_table, ("extra",))
        return delete_rows(run.tcur, run.spec.target, condition, shape)
    extra = diff.key_columns_text(diff.extra, len(run.plan.key))
    return delete_keys(run.tcur, run.spec.target, run.plan.key_columns(), extra, shape)


def apply_differing_rows(run, diff: Difference, rows: int, delete_extra: bool) -> MergeCounts:
    """In the open final transaction: upsert the staged rows, delete the extra keys."""
    counts, shape = upsert_differing_rows(run, rows)
    if delete_extra:
        counts = replace(counts, deleted=delete_extra_keys(run, diff, shape))
    return counts


def verify_final(tcur, spec: TableSpec, plan: TablePlan, expected: ScopeChecksum, diff: Difference):
    """The final table against the snapshot, in the final transaction; recorded when the
    whole table was compared. Its checksum comes from the changes where `delta_verify`
    can prove them the only ones, else from a full pass. Where extra rows stay (merge
    without delete_missing), their count and checksum, known from pass 2, are taken out
    of the target's totals first."""
    side = target_side(spec)
    scope = "target scope" if spec.mode is Mode.MERGE else "whole target table"
    final = delta_checksum(tcur, side, plan, diff, deletes_extra_rows(spec)) if recordable(side) else None
    from_changes = final is not None
    if from_changes:
        horizon = diff.target_horizon
    else:
        horizon = take_horizon(tcur) if recordable(side) else None
        final = target_checksum(tcur, side, plan.columns)
    whole_table = final
    only_in_target = 0
    if not deletes_extra_rows(spec) and diff.extra_count:
        only_in_target = diff.extra_count
        final = ScopeChecksum(final.rows - diff.extra_count, final.checksum - Decimal(diff.extra_sum))
        scope = f"{scope} without the {diff.extra_count} rows only in the target"
    if from_changes:
        scope += f", {FROM_CHANGES}"
    require_final_equal(tcur, spec, expected, final)
    if horizon is not None:
        # The table now holds exactly the source scope (unless it keeps extra rows): the
        # source's bucket sums are its own, for the next run's pass 1.
        exact = deletes_extra_rows(spec) or not diff.extra_count
        buckets = diff.source_buckets if exact else None
        write_record(tcur, side, plan.columns, horizon, whole_table, buckets)
    return LoadVerification(expected, final, scope, only_in_target)


def final_table_rows(tcur, spec: TableSpec, verification: LoadVerification | None) -> int:
    """The final table's row count, in the final transaction."""
    if verification is not None and target_side(spec).where is None:
        # the final verification counted the whole table, in this transaction
        return verification.final.rows + verification.rows_only_in_target
    tcur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
    return tcur.fetchone()[0]


def run_differential(run, diff: Difference) -> dict:
    """Copy, apply and verify what `diff` found; commit. The caller ends the transactions."""
    spec, plan, scur, tcur, timer = run.spec, run.plan, run.scur, run.tcur, run.timer
    if diff.differing_buckets == 0:
        verification, target_rows = unchanged(spec, plan, diff, tcur)
        require_read_only_source(scur, str(spec.target))
        tcur.connection.commit()  # the record, if any
        return _result(spec, 0, 0, MergeCounts(0, 0, 0), target_rows, verification, diff)
    with timer.stage("copy"):
        rows, bytes_ = copy_differing_rows(run, diff)
    with final_transaction(scur, tcur, str(spec.target)) as final:
        with timer.stage("merge"):
            counts = apply_differing_rows(run, diff, rows, deletes_extra_rows(spec))
        verification = None
        if spec.verify:
            with timer.stage("verify_final"):
                verification = verify_final(tcur, spec, plan, expected_sums(diff), diff)
        with timer.stage("commit"):
            target_rows = final_table_rows(tcur, spec, verification)
            final.commit()
    return _result(spec, rows, bytes_, counts, target_rows, verification, diff)


def _result(spec, rows: int, bytes_: int, counts: MergeCounts, target_rows: int, verification, diff) -> dict:
    """SyncResult fields of a differential run."""
    return dict(
        table=str(spec.target),
        mode=spec.mode,
        rows_copied=rows,
        bytes_copied=bytes_,
        **counts.fields(),
        target_rows=target_rows,
        created_target=False,
        verification=verification,
        differential=stats(diff),
    )


def unchanged(spec: TableSpec, plan: TablePlan, diff: Difference, tcur) -> tuple[LoadVerification, int]:
    """Every bucket is equal: the comparison was the verification, and no row is written;
    (that verification, the table's row count). A target hashed live is recorded, so the
    next run need not hash it again; the caller commits."""
    target_rows = diff.target_rows
    if target_side(spec).where:  # pass 1 counted the scope; the table may hold more
        tcur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
        target_rows = tcur.fetchone()[0]
    final = ScopeChecksum(diff.target_rows, Decimal(diff.target_sum))
    scope = "whole target table" if spec.mode is Mode.FULL_REFRESH else "target scope"
    if diff.target_recorded_at is not None:
        basis = (
            f"{scope}: the checksum verified at {diff.target_recorded_at}, and no row written "
            "since (row versions and count checked)"
        )
        if diff.target_buckets_recorded:  # nothing changed: the next run starts with totals
            forget_buckets(tcur, target_side(spec))
    else:
        basis = f"{scope}, compared before any write (all equal)"
        if diff.target_horizon is not None:
            write_record(tcur, target_side(spec), plan.columns, diff.target_horizon, final)
    return LoadVerification(expected_sums(diff), final, basis), target_rows
