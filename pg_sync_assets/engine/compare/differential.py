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
This module decides and compares; `differential_write` copies, writes and verifies.

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

from ..plan.introspect import Column, table_exists
from ..plan.plan import TablePlan
from ..plan.spec import Mode, TableSpec
from ..verify.buckets import BucketSums
from ..verify.guard import on_source_meanwhile
from ..verify.record import (
    recordable,
    recorded_bucket_count,
    recorded_buckets,
    recorded_checksum,
    take_horizon,
)
from ..verify.verify import ScopeChecksum, source_checksum, target_checksum
from .localize import Difference, bucket_count, bucket_sums, bucketing, localize

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


def compare(spec: TableSpec, plan: TablePlan, scur, tcur, keys_table: str | None = None) -> Difference | None:
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
            return _bucket_pass_first(spec, plan, scur, tcur, count, horizon, keys_table)
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
        return _localize(spec, plan, scur, tcur, rows, None, horizon, recorded_at, keys_table=keys_table)
    finally:
        tcur.connection.rollback()


def _bucket_pass_first(spec, plan, scur, tcur, count: int, horizon, keys_table: str | None) -> Difference:
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
    diff = _localize(spec, plan, scur, tcur, 0, target, horizon, recorded_at, source_buckets, keys_table)
    diff.seconds_pass1 = round(diff.seconds_pass1 + waited, 3)
    return diff


def _localize(
    spec, plan, scur, tcur, rows: int, buckets, horizon, recorded_at, source_buckets=None, keys_table=None
):
    diff = localize(
        spec,
        scur.connection,
        tcur.connection,
        bucketing(plan),
        plan.columns,
        rows,
        limit=LISTED if keys_table is not None else sys.maxsize,
        target_spec=target_side(spec),
        give_up_above=None if spec.differential == ALWAYS else FALL_BACK_ABOVE,
        target_buckets=buckets,
        source_buckets=source_buckets,
        keys_table=keys_table,
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


LISTED = 100  # differing keys of each kind kept in memory for messages; all go to the key table


def keys_table(staging: str) -> str:
    """The run's `KeyTable`: named after its staging table (dropped with it)."""
    return staging + "k"


def deletes_extra_rows(spec: TableSpec) -> bool:
    return spec.mode is Mode.FULL_REFRESH or spec.delete_missing


def compare_logged(run) -> Difference | None:
    """`compare` as a run's "compare" stage, its outcome logged."""
    with run.timer.stage("compare"):
        run.tcur.connection.autocommit = False
        diff = compare(run.spec, run.plan, run.scur, run.tcur, keys_table(run.staging))
    if diff is not None:
        log_outcome(run.log, run.spec, diff)
    return diff


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
