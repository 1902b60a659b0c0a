"""Differential sync: copy only the rows that differ, when few do.

For a `full_refresh` or `merge` table with a key whose target already holds rows, the
source scope (in the run's snapshot) and the target are compared bucket by bucket
(`localize`, pass 1: one scan a side, both servers at once). When at most half of the
buckets differ, pass 2 names the missing, changed and extra keys; only the missing and
changed rows are copied through staging and upserted, and the extra rows are deleted
where the mode deletes (`full_refresh`, `merge` with `delete_missing`). Otherwise the run
falls back to the full copy, in the same snapshot. Either way the final table ends
exactly as a full copy would leave it, and it is verified against the snapshot's
checksum before the commit (so a trigger or rule that alters rows still fails the run).

What each side is compared over: the `where` scope on both for `merge`; for
`full_refresh` the whole target table, since a full copy leaves nothing else in it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal

from psycopg2 import sql

from .copy import source_copy_statement, staging_copy_statement, stream_copy
from .delta_verify import delta_checksum
from .errors import ConfigError
from .guard import LoadVerification, on_source_meanwhile, require_final_equal
from .introspect import Column, table_exists
from .localize import Difference, bucket_count, bucket_sums, bucketing, localize
from .locks import lock_final_table
from .merge import DIFFERENTIAL, MergeCounts, delete_keys, merge_from_staging
from .plan import TablePlan
from .record import (
    BucketSums,
    forget_buckets,
    recordable,
    recorded_bucket_count,
    recorded_buckets,
    recorded_checksum,
    take_horizon,
    write_record,
)
from .run import require_read_only_source
from .spec import Mode, TableSpec
from .sql import key_in, pin_text_settings
from .staging import STAGING_SCHEMA
from .target import TargetShape, read_target_shape, require_writable_target
from .verify import ScopeChecksum, source_checksum, target_checksum

AUTO, ALWAYS, NEVER = "auto", "always", "never"
DIFFERENTIAL_CHOICES = (AUTO, ALWAYS, NEVER)
# Above this share of differing buckets, `auto` copies everything: naming the keys costs
# a second scan a side and a sort, and the copy of most rows is due anyway.
FALL_BACK_ABOVE = 0.5
FROM_CHANGES = "checksum from the rows written and deleted; no other row written (row versions checked)"


@dataclass(frozen=True)
class DifferentialStats:
    """What the comparison found and what the run did with it (for metadata)."""

    buckets: int
    buckets_differing: int
    source_rows: int
    target_rows: int
    rows_missing: int
    rows_changed: int
    rows_extra: int
    fell_back: bool  # too many buckets differed: the whole scope was copied
    target_recorded_at: str | None = None  # target totals from the record of the run verified then
    seconds_buckets: float = 0.0  # pass 1: bucket sums, both sides
    buckets_from_record: bool = False  # pass 1 read the source alone: the target's sums were recorded
    seconds_keys: float = 0.0  # pass 2: keys of the differing buckets

    @property
    def buckets_skipped(self) -> int:
        return self.buckets - self.buckets_differing

    @property
    def target_read(self) -> str:
        """How the comparison knew the target's side."""
        if self.target_recorded_at is None:
            return "hashed live"
        if self.buckets_from_record:
            return f"checksum and bucket sums recorded by the run verified at {self.target_recorded_at}"
        if self.buckets:
            return "hashed live per bucket (its record holds no bucket sums)"
        return f"checksum recorded by the run verified at {self.target_recorded_at}"


def eligible(spec: TableSpec, plan: TablePlan, window) -> bool:
    return (
        spec.differential != NEVER
        and window is None
        and spec.mode in (Mode.FULL_REFRESH, Mode.MERGE)
        and bool(plan.key)
    )


def records_buckets(spec: TableSpec, plan: TablePlan) -> bool:
    """Whether a verified full copy of `spec` records bucket sums for the next differential
    run: a table compared whole (no `where`, no window) that the copy leaves equal to the
    source scope (nothing extra kept)."""
    return eligible(spec, plan, None) and recordable(spec) and deletes_extra_rows(spec)


SourceSums = tuple[ScopeChecksum, BucketSums | None]  # the scope's checksum, and its bucket sums


def full_copy_sums(scur, spec: TableSpec, plan: TablePlan, rows: int) -> SourceSums:
    """The source scope's checksum for a full copy's verification, in the run's snapshot.
    For a table the next run will compare differentially, one bucket pass instead (the
    checksum is the buckets' total): recorded once the copy is verified, its sums spare
    that run the target's bucket pass and the totals."""
    if records_buckets(spec, plan):
        n = bucket_count(rows)
        buckets = bucket_sums(scur.connection, spec, bucketing(plan), plan.columns, "source", n)
        return buckets.total, buckets
    return source_checksum(scur, spec, plan.columns), None


def compared_sums(spec: TableSpec, plan: TablePlan, diff: Difference) -> SourceSums:
    """`full_copy_sums` from a comparison that gave up in the same snapshot (its pass 1
    summed the same scope): no second pass over the source."""
    buckets = diff.source_buckets if records_buckets(spec, plan) else None
    return expected_sums(diff), buckets


def target_side(spec: TableSpec) -> TableSpec:
    """The target rows a sync of `spec` answers for: all of them for a full refresh."""
    return replace(spec, where=None) if spec.mode is Mode.FULL_REFRESH else spec


def compare(spec: TableSpec, plan: TablePlan, scur, tcur) -> Difference | None:
    """Totals first, then (if they differ) pass 1 and, unless too much differs, pass 2, in
    the source's run snapshot; None when the target is missing or empty (nothing to
    compare: the full copy is the differential). The target's transaction is ended; the
    source's snapshot stays open for the copy.

    A target whose record holds bucket sums was changed by the last run: changes are
    likely again, so the totals are skipped. Pass 1 (which gives them too) reads the
    source while the record is checked, and takes the target's sums from the record if
    it is usable (else reads them live). A run that then finds nothing changed drops
    those sums, so the next run starts with the cheaper totals again."""
    try:
        if not table_exists(tcur, spec.target):
            return None
        tcur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(spec.target.ident))
        if not tcur.fetchone()[0]:
            return None
        side = target_side(spec)
        # Before any read of the target: its rows from here on are the baseline.
        horizon = take_horizon(tcur) if recordable(side) else None
        count = recorded_bucket_count(tcur, side, bucketing(plan))
        if count is not None:
            return _bucket_pass_first(spec, plan, scur, tcur, count, horizon)
        source_total, (target_total, recorded_at) = _totals(spec, plan, scur, tcur)
        if source_total == target_total:
            # The common case of a scheduled run: one scan of the source, and of the target
            # only when no record of it can be trusted; both servers at once.
            return Difference(
                limit=0,
                source_rows=source_total.rows,
                source_sum=int(source_total.checksum),
                target_rows=target_total.rows,
                target_sum=int(target_total.checksum),
                target_recorded_at=recorded_at,
                target_horizon=horizon,
            )
        # exact row counts, so the bucket count is stable from run to run
        rows = max(source_total.rows, target_total.rows)
        return _localize(spec, plan, scur, tcur, rows, None, horizon, recorded_at)
    finally:
        tcur.connection.rollback()


def _bucket_pass_first(spec, plan, scur, tcur, count: int, horizon) -> Difference:
    """The source's bucket pass, read while the target's record is checked; the target's
    sums from the record when it is usable, else read live (pass 1 gives totals too)."""
    side, by = target_side(spec), bucketing(plan)
    started = time.monotonic()
    with on_source_meanwhile(
        scur, bucket_sums, scur.connection, spec, by, plan.columns, "source", count
    ) as source:
        recorded = recorded_checksum(tcur, side, plan.columns)
        target = recorded_buckets(tcur, side, by) if recorded is not None else None
        source_buckets = source.result()
    waited = time.monotonic() - started
    recorded_at = recorded.recorded_at if target is not None else None
    diff = _localize(spec, plan, scur, tcur, 0, target, horizon, recorded_at, source_buckets)
    diff.seconds_pass1 = round(diff.seconds_pass1 + waited, 3)
    return diff


def _localize(spec, plan, scur, tcur, rows: int, buckets, horizon, recorded_at, source_buckets=None):
    diff = localize(
        spec,
        scur.connection,
        tcur.connection,
        bucketing(plan),
        plan.columns,
        rows,
        limit=sys.maxsize,
        target_spec=target_side(spec),
        give_up_above=None if spec.differential == ALWAYS else FALL_BACK_ABOVE,
        target_buckets=buckets,
        source_buckets=source_buckets,
    )
    diff.target_horizon, diff.target_recorded_at = horizon, recorded_at
    return diff


def _totals(spec: TableSpec, plan: TablePlan, scur, tcur):
    """Count and checksum of the source scope, and (count and checksum, when recorded)
    of the target's side, on both servers at once (psycopg2 releases the GIL while it
    waits)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        target = pool.submit(_target_totals, tcur, target_side(spec), plan.columns)
        source = source_checksum(scur, spec, plan.columns)
        return source, target.result()


def _target_totals(tcur, side: TableSpec, columns: Sequence[Column]) -> tuple[ScopeChecksum, str | None]:
    """The target's recorded totals and when they were verified, if it provably holds
    the verified rows still (one scan of row versions, no hashing); else hashed live."""
    recorded = recorded_checksum(tcur, side, columns)
    if recorded is not None:
        return recorded.checksum, recorded.recorded_at
    return target_checksum(tcur, side, columns), None


def stats(diff: Difference) -> DifferentialStats:
    return DifferentialStats(
        buckets=diff.buckets,
        buckets_differing=diff.differing_buckets,
        source_rows=diff.source_rows,
        target_rows=diff.target_rows,
        rows_missing=diff.missing_count,
        rows_changed=diff.changed_count,
        rows_extra=diff.extra_count,
        fell_back=diff.abandoned,
        target_recorded_at=diff.target_recorded_at,
        seconds_buckets=diff.seconds_pass1,
        seconds_keys=diff.seconds_pass2,
        buckets_from_record=diff.target_buckets_recorded,
    )


def copy_differing_rows(
    spec: TableSpec, plan: TablePlan, copied: list[Column], staging: str, diff: Difference, scur, tcur
) -> tuple[int, int]:
    """Copy the source rows of the missing and changed keys into staging; (rows, bytes)."""
    tcur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
    rows = bytes_ = 0
    to_copy = diff.missing + diff.changed
    if to_copy:
        # COPY takes no bind parameters: the keys go in as a quoted literal.
        texts = diff.key_columns_text(to_copy, len(plan.key))
        only = key_in(plan.key_columns(), [sql.Literal(v) for v in texts])
        done = stream_copy(
            scur, tcur, source_copy_statement(spec, copied, only), staging_copy_statement(staging, copied)
        )
        rows, bytes_ = done.rows, done.bytes
    tcur.connection.commit()
    return rows, bytes_


def upsert_differing_rows(
    tcur, spec: TableSpec, plan: TablePlan, copied: list[Column], staging: str, rows: int, work_mem: str
) -> tuple[MergeCounts, TargetShape]:
    """In the open final transaction: upsert the staged rows; (counts, the table's shape)."""
    tcur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
    pin_text_settings(tcur)  # key texts must render as localize saw them
    shape = read_target_shape(tcur, spec.target)
    if shape is None:
        raise ConfigError(f"`{spec.target}` was dropped during the run; run it again")
    require_writable_target(spec.target, shape, spec.mode, plan.key)
    if rows:  # the planner's row estimate decides between index lookups and a scan
        tcur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, staging)))
    lock_final_table(tcur, spec, "ROW EXCLUSIVE")
    counts = (
        merge_from_staging(tcur, spec.target, staging, copied, plan.key_columns(), rows, shape)
        if rows
        else MergeCounts(0, 0, 0)
    )
    return replace(counts, method=DIFFERENTIAL), shape


def delete_extra_keys(tcur, spec: TableSpec, plan: TablePlan, diff: Difference, shape: TargetShape) -> int:
    """In the open final transaction, after the upsert: delete the keys only the target has."""
    extra = diff.key_columns_text(diff.extra, len(plan.key))
    return delete_keys(tcur, spec.target, plan.key_columns(), extra, shape)


def apply_differing_rows(
    tcur,
    spec: TableSpec,
    plan: TablePlan,
    copied: list[Column],
    staging: str,
    diff: Difference,
    rows: int,
    delete_extra: bool,
    work_mem: str,
) -> MergeCounts:
    """In the open final transaction: upsert the staged rows, delete the extra keys."""
    counts, shape = upsert_differing_rows(tcur, spec, plan, copied, staging, rows, work_mem)
    if delete_extra:
        counts = replace(counts, deleted=delete_extra_keys(tcur, spec, plan, diff, shape))
    return counts


def deletes_extra_rows(spec: TableSpec) -> bool:
    return spec.mode is Mode.FULL_REFRESH or spec.delete_missing


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
    require_final_equal(str(spec.target), expected, final)
    if horizon is not None:
        # The table now holds exactly the source scope (unless it keeps extra rows): the
        # source's bucket sums are its own, for the next run's pass 1.
        exact = deletes_extra_rows(spec) or not diff.extra_count
        buckets = diff.source_buckets if exact else None
        write_record(tcur, side, plan.columns, horizon, whole_table, buckets)
    return LoadVerification(expected, final, scope, only_in_target)


def log_outcome(log, spec: TableSpec, diff: Difference) -> None:
    if diff.buckets == 0:  # the totals were equal: no bucket was compared
        log.info("`%s`: source and target checksums are equal; nothing to copy", spec.target)
        return
    if diff.abandoned:
        log.info(
            "`%s`: %d of %d key buckets differ; copying the whole scope",
            spec.target,
            diff.differing_buckets,
            diff.buckets,
        )
        return
    log.info(
        "`%s`: %d of %d key buckets differ: %d rows missing, %d changed, %d only in the target",
        spec.target,
        diff.differing_buckets,
        diff.buckets,
        diff.missing_count,
        diff.changed_count,
        diff.extra_count,
    )


def expected_sums(diff: Difference) -> ScopeChecksum:
    """The source scope's count and checksum in the run's snapshot (pass 1 or the totals)."""
    return ScopeChecksum(diff.source_rows, Decimal(diff.source_sum))


def final_table_rows(tcur, spec: TableSpec, verification: LoadVerification | None) -> int:
    """The final table's row count, in the final transaction."""
    if verification is not None and target_side(spec).where is None:
        # the final verification counted the whole table, in this transaction
        return verification.final.rows + verification.rows_only_in_target
    tcur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
    return tcur.fetchone()[0]


def run_differential(spec, plan, copied, staging, diff: Difference, scur, tcur, timer, work_mem: str) -> dict:
    """Copy, apply and verify what `diff` found; commit. The caller ends the transactions."""
    if diff.differing_buckets == 0:
        verification, target_rows = unchanged(spec, plan, diff, tcur)
        require_read_only_source(scur, str(spec.target))
        tcur.connection.commit()  # the record, if any
        return _result(spec, 0, 0, MergeCounts(0, 0, 0), target_rows, verification, diff)
    with timer.stage("copy"):
        rows, bytes_ = copy_differing_rows(spec, plan, copied, staging, diff, scur, tcur)
    with timer.stage("merge"):
        counts = apply_differing_rows(
            tcur, spec, plan, copied, staging, diff, rows, deletes_extra_rows(spec), work_mem
        )
    verification = None
    if spec.verify:
        with timer.stage("verify_final"):
            verification = verify_final(tcur, spec, plan, expected_sums(diff), diff)
    with timer.stage("commit"):
        target_rows = final_table_rows(tcur, spec, verification)
        require_read_only_source(scur, str(spec.target))
        tcur.connection.commit()
    return _result(spec, rows, bytes_, counts, target_rows, verification, diff)


def _result(spec, rows: int, bytes_: int, counts: MergeCounts, target_rows: int, verification, diff) -> dict:
    """SyncResult fields of a differential run."""
    return dict(
        table=str(spec.target),
        mode=spec.mode,
        rows_copied=rows,
        bytes_copied=bytes_,
        inserted=counts.inserted,
        updated=counts.updated,
        deleted=counts.deleted,
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
