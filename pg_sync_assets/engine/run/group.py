"""A snapshot group: several tables read in one source snapshot and changed in one target
transaction, so related tables (orders and their items, a parent and its children)
never disagree in the target, and a failure leaves every one of them as it was.

1. One REPEATABLE READ snapshot on the source for every member: plan, compare, copy,
   checksums.
2. Each member's table lock and staging table (locks taken in name order, so two groups
   sharing tables cannot deadlock); each member compared with its target as a table
   synced alone is (`differential.py`: bucket sums, then the differing keys), and
   copied into its staging table: only its differing rows when few differ, else all.
3. One final transaction: the members' writes in foreign-key order of the target tables,
   parents first for inserts and updates, children first for deletes (a child row never
   lands before its parent, and a parent row is deleted only after the children that
   left the source), while the source server sums the snapshot of each member that was
   copied whole; then each final table verified against its sums (`guard.py`, or from
   its changes for a differential member); one commit.

Members must share their source and target connections (one snapshot, one transaction).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass

from psycopg2 import sql

from ..compare.differential import (
    SourceSums,
    compare_logged,
    compared_sums,
    deletes_extra_rows,
    eligible,
    expected_sums,
    full_copy_sums,
    stats,
)
from ..compare.differential_write import (
    copy_differing_rows,
    delete_extra_keys,
    final_table_rows,
    unchanged,
    upsert_differing_rows,
    verify_final,
)
from ..compare.localize import Difference
from ..load.copy import source_copy_statement, staging_copy_statement, stream_copy
from ..load.merge import (
    DIFFERENTIAL,
    MergeCounts,
    delete_missing,
    delete_rows,
    merge_from_staging,
    not_staged,
    replace_from_staging,
)
from ..load.staging import STAGING_SCHEMA
from ..plan.spec import Mode, TableSpec
from ..plan.target import TargetShape
from ..verify.guard import on_source_meanwhile
from .context import (
    Run,
    SyncOptions,
    end_run_transactions,
    final_transaction,
    open_snapshot,
    plan_copy,
    staged_run,
)
from .stages import StageTimer
from .sync import SyncResult, open_final_table, verify_full_copy

_log = logging.getLogger("pg_sync_assets")

# A foreign key declared on a partition (as `pg_dump -s` writes pagila's) orders the
# partitioned table it belongs to as well: each side of a key stands for itself and for
# the root of its partition tree, whichever of them is a member.
_FK_EDGES = """
SELECT DISTINCT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_constraint k
CROSS JOIN LATERAL (VALUES (k.conrelid), (pg_partition_root(k.conrelid))) AS child(oid)
CROSS JOIN LATERAL (VALUES (k.confrelid), (pg_partition_root(k.confrelid))) AS parent(oid)
JOIN pg_class c ON c.oid = child.oid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = parent.oid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND child.oid <> parent.oid
"""


@dataclass
class _Member(Run):
    """A member's run, with what the group's later stages need to know of it."""

    orphans: tuple[str, ...] = ()
    rows: int = 0
    bytes: int = 0
    shape: TargetShape | None = None
    created: bool = False
    counts: MergeCounts | None = None
    diff: Difference | None = None  # the comparison before the copy, if one ran

    @property
    def differential(self) -> bool:
        """Only the rows that differ are copied and written."""
        return self.diff is not None and not self.diff.abandoned


def parents_first(
    specs: list[TableSpec], edges: list[tuple[tuple[str, str], tuple[str, str]]]
) -> list[TableSpec]:
    """`specs` ordered so that a table comes after the tables its foreign keys point at
    (among the members); members in a cycle keep their given order."""
    by_target = {(s.target.schema, s.target.name): s for s in specs}
    parents = {key: set() for key in by_target}
    for child, parent in edges:
        if child in by_target and parent in by_target:
            parents[child].add(parent)
    ordered: list[TableSpec] = []
    placed: set = set()
    while len(ordered) < len(specs):
        ready = [k for k in by_target if k not in placed and parents[k] <= placed]
        if not ready:  # a cycle: the rest in the given order
            ready = [k for k in by_target if k not in placed]
        for key in ready:
            ordered.append(by_target[key])
            placed.add(key)
    return ordered


def sync_group(
    specs: list[TableSpec],
    source_conn,
    target_conn,
    *,
    options: SyncOptions | None = None,
    log=None,
    snapshot: str | None = None,
) -> list[SyncResult]:
    """Sync `specs` as one snapshot group; see the module docstring. The results follow
    the order of `specs`. With `snapshot` (an exported snapshot), it is the group's."""
    log, options = log or _log, options or SyncOptions()
    members = _prepare(specs, source_conn, target_conn, log, options, snapshot)
    with ExitStack() as stack:
        for member in sorted(members, key=lambda m: str(m.spec.target)):
            member.staging, member.orphans = stack.enter_context(
                staged_run(member.spec, target_conn, member.copied, member.timer, log)
            )
        try:
            with source_conn.cursor() as scur, target_conn.cursor() as tcur:
                for member in members:
                    member.scur, member.tcur = scur, tcur
                for member in members:
                    _compare(member)
                for member in members:
                    _copy(member)
                # The source's checksums, on its server, while the target writes.
                labels = ", ".join(str(m.spec.target) for m in members)
                with on_source_meanwhile(scur, _source_sums, members, scur) as source_sums:
                    order = write_order(members, tcur)
                    with final_transaction(scur, tcur, labels) as final:
                        _apply_all(order)
                        results = _verify_all(members, source_sums)
                        final.commit()
        finally:
            end_run_transactions(source_conn, target_conn)
    return results


def _prepare(
    specs: list[TableSpec], source_conn, target_conn, log, options: SyncOptions, snapshot: str | None
) -> list[_Member]:
    """Plan every member in one source snapshot (the transaction stays open)."""
    open_snapshot(source_conn, target_conn, snapshot)
    members = []
    with source_conn.cursor() as scur, target_conn.cursor() as tcur:
        for spec in specs:
            timer = StageTimer(str(spec.target), source_conn, target_conn, log, options.progress_interval)
            with timer.stage("plan"):
                members.append(_Member(spec, *plan_copy(scur, tcur, spec), timer, options, log))
    return members


def _compare(member: _Member) -> None:
    """Compare a member with its target in the group's snapshot, as `sync_table` does."""
    if not eligible(member.spec, member.plan, None) or member.changes:  # a changed shape: copy it all
        return
    member.diff = compare_logged(member)


def _copy(member: _Member) -> None:
    spec, scur, tcur, target_conn = member.spec, member.scur, member.tcur, member.target_conn
    if member.differential and not member.diff.differing_buckets:
        return  # nothing differs: nothing to copy
    with member.timer.stage("copy"):
        target_conn.autocommit = False
        if member.differential:
            member.rows, member.bytes = copy_differing_rows(member, member.diff)
            return
        tcur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_SCHEMA, member.staging)))
        done = stream_copy(
            scur,
            tcur,
            source_copy_statement(spec, member.copied),
            staging_copy_statement(member.staging, member.copied),
        )
        target_conn.commit()
        member.rows, member.bytes = done.rows, done.bytes


def _source_sums(members: list[_Member], scur) -> list[SourceSums | None]:
    """What each verified member copied whole is checked against, in the group's snapshot
    (None for a differential member, whose comparison summed the source, and for a member
    with `verify: false`)."""
    sums: list[SourceSums | None] = []
    for m in members:
        if not m.spec.verify or m.differential:
            sums.append(None)
        elif m.diff is not None:  # a comparison that gave up summed the same scope
            sums.append(compared_sums(m.spec, m.plan, m.diff))
        else:
            sums.append(full_copy_sums(scur, m.spec, m.plan, m.rows))
    return sums


def fk_edges(tcur) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(child, parent) table pairs of the target's foreign keys (partitions count as their root)."""
    tcur.execute(_FK_EDGES)
    return [((a, b), (c, d)) for a, b, c, d in tcur.fetchall()]


def write_order(members: list, tcur) -> list:
    """Runs (anything with a `spec`) ordered parents first by the target's foreign keys."""
    by_target = {m.spec.target: m for m in members}
    return [by_target[spec.target] for spec in parents_first([m.spec for m in members], fk_edges(tcur))]


def _apply_all(order: list[_Member]) -> None:
    """Writes of every member in one transaction: inserts and updates parents first,
    then deletes children first."""
    for member in order:
        with member.timer.stage("merge"):
            _upsert(member)
    for member in reversed(order):
        with member.timer.stage("merge"):
            _delete(member)


def _upsert(member: _Member) -> None:
    spec, plan, cur, work_mem = member.spec, member.plan, member.tcur, member.options.merge_work_mem
    if member.differential:
        if member.diff.differing_buckets:
            member.counts, member.shape = upsert_differing_rows(member, member.rows)
        else:
            member.counts = MergeCounts(0, 0, 0, DIFFERENTIAL)
        return
    shape, member.created = open_final_table(cur, spec, plan, member.changes, work_mem)
    member.shape = shape
    key = plan.key_columns()
    if spec.mode is Mode.FULL_REFRESH and not shape.referenced_by:
        member.counts = replace_from_staging(
            cur, spec.target, member.staging, member.copied, key, member.rows, shape
        )
        return
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, member.staging)))
    member.counts = merge_from_staging(
        cur, spec.target, member.staging, member.copied, key, member.rows, shape
    )


def _delete(member: _Member) -> None:
    spec, counts, key, cur = member.spec, member.counts, member.plan.key_columns(), member.tcur
    deleted = None
    if member.differential:
        if member.diff.differing_buckets and deletes_extra_rows(spec):
            deleted = delete_extra_keys(member, member.diff, member.shape)
    elif spec.mode is Mode.FULL_REFRESH and member.shape.referenced_by:
        deleted = delete_rows(cur, spec.target, not_staged(member.staging, key), member.shape)
    elif spec.mode is not Mode.FULL_REFRESH and spec.delete_missing:
        deleted = delete_missing(cur, spec, member.staging, key, member.shape)
    if deleted is not None:
        member.counts = MergeCounts(counts.inserted, counts.updated, deleted, counts.method)


def _verify_all(members: list[_Member], source_sums: Future) -> list[SyncResult]:
    results = []
    for i, member in enumerate(members):
        if member.differential:
            verification, target_rows = _verify_differential(member)
        else:
            verification, target_rows = _verify_full_copy(member, source_sums, i)
        counts = member.counts
        results.append(
            SyncResult(
                table=str(member.spec.target),
                mode=member.spec.mode,
                rows_copied=member.rows,
                bytes_copied=member.bytes,
                **counts.fields(),
                target_rows=target_rows,
                created_target=member.created,
                plan=member.plan,
                verification=verification,
                stage_seconds=dict(member.timer.seconds),
                removed_orphans=member.orphans,
                method=counts.method,
                schema_changes=tuple(c.description for c in member.changes),
                differential=stats(member.diff) if member.diff is not None else None,
            )
        )
    return results


def _verify_differential(member: _Member):
    spec, plan, diff, tcur = member.spec, member.plan, member.diff, member.tcur
    if not diff.differing_buckets:  # the comparison was the verification
        return unchanged(spec, plan, diff, tcur)
    verification = None
    if spec.verify:
        with member.timer.stage("verify_final"):
            verification = verify_final(tcur, spec, plan, expected_sums(diff), diff)
    return verification, final_table_rows(tcur, spec, verification)


def _verify_full_copy(member: _Member, source_sums: Future, i: int):
    spec, tcur = member.spec, member.tcur
    verification = None
    if spec.verify:
        with member.timer.stage("verify_source"):  # what the writes did not cover
            expected, buckets = source_sums.result()[i]
        with member.timer.stage("verify_final"):
            verification = verify_full_copy(member, expected, buckets)
    tcur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
    return verification, tcur.fetchone()[0]
