"""A snapshot group: several tables read in one source snapshot and changed in one target
transaction, so related tables (orders and their items, a parent and its children)
never disagree in the target, and a failure leaves every one of them as it was.

1. One REPEATABLE READ snapshot on the source for every member: plan, copy, checksums.
2. Each member's table lock and staging table (locks taken in name order, so two groups
   sharing tables cannot deadlock); each member copied into its staging table.
3. One final transaction: the members' writes in foreign-key order of the target tables,
   parents first for inserts and updates, children first for deletes (a child row never
   lands before its parent, and a parent row is deleted only after the children that
   left the source), while the source server sums each member's snapshot; then each
   final table verified against its sums (`guard.py`); one commit.

Members always take the full copy (no differential comparison) and must share their
source and target connections (one snapshot, one transaction).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass

from psycopg2 import sql

from .copy import source_copy_statement, staging_copy_statement, stream_copy
from .evolve import SchemaChange
from .guard import check_full_copy, on_source_meanwhile
from .introspect import Column
from .merge import (
    MergeCounts,
    delete_missing,
    delete_rows,
    merge_from_staging,
    not_staged,
    replace_from_staging,
)
from .plan import TablePlan
from .run import end_run_transactions, open_snapshot, plan_copy, require_read_only_source, staged_run
from .spec import Mode, TableSpec
from .stages import StageTimer
from .staging import STAGING_SCHEMA
from .sync import SyncOptions, SyncResult, open_final_table
from .target import TargetShape
from .verify import ScopeChecksum, source_checksum

_log = logging.getLogger("pg_sync_assets")

_FK_EDGES = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conrelid <> k.confrelid AND k.conparentid = 0
"""


@dataclass
class _Member:
    spec: TableSpec
    plan: TablePlan
    copied: list[Column]
    changes: list[SchemaChange]
    timer: StageTimer
    staging: str = ""
    orphans: tuple[str, ...] = ()
    rows: int = 0
    bytes: int = 0
    shape: TargetShape | None = None
    created: bool = False
    counts: MergeCounts | None = None


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
    specs: list[TableSpec], source_conn, target_conn, *, options: SyncOptions | None = None, log=None
) -> list[SyncResult]:
    """Sync `specs` as one snapshot group; see the module docstring. The results follow
    the order of `specs`."""
    log, options = log or _log, options or SyncOptions()
    members = _prepare(specs, source_conn, target_conn)
    with ExitStack() as stack:
        for member in sorted(members, key=lambda m: str(m.spec.target)):
            member.staging, member.orphans = stack.enter_context(
                staged_run(member.spec, target_conn, member.copied, member.timer, log)
            )
        try:
            with source_conn.cursor() as scur, target_conn.cursor() as tcur:
                for member in members:
                    _copy(member, scur, tcur)
                # The source's checksums, on its server, while the target writes.
                with on_source_meanwhile(scur, _source_checksums, members, scur) as source_sums:
                    order = _write_order(members, tcur)
                    _apply_all(order, tcur, options.merge_work_mem)
                    results = _verify_all(members, scur, tcur, source_sums)
                require_read_only_source(scur, ", ".join(str(m.spec.target) for m in members))
                target_conn.commit()
        finally:
            end_run_transactions(source_conn, target_conn)
    return results


def _prepare(specs: list[TableSpec], source_conn, target_conn) -> list[_Member]:
    """Plan every member in one source snapshot (the transaction stays open)."""
    open_snapshot(source_conn, target_conn)
    members = []
    with source_conn.cursor() as scur, target_conn.cursor() as tcur:
        for spec in specs:
            timer = StageTimer(str(spec.target), source_conn, target_conn)
            with timer.stage("plan"):
                members.append(_Member(spec, *plan_copy(scur, tcur, spec), timer))
    return members


def _copy(member: _Member, scur, tcur) -> None:
    spec, target_conn = member.spec, tcur.connection
    with member.timer.stage("copy"):
        target_conn.autocommit = False
        tcur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_SCHEMA, member.staging)))
        done = stream_copy(
            scur,
            tcur,
            source_copy_statement(spec, member.copied),
            staging_copy_statement(member.staging, member.copied),
        )
        target_conn.commit()
        member.rows, member.bytes = done.rows, done.bytes


def _source_checksums(members: list[_Member], scur) -> list[ScopeChecksum | None]:
    """The source scope's checksum of every verified member, in the group's snapshot;
    None for a member with `verify: false`."""
    return [source_checksum(scur, m.spec, m.plan.column_names) if m.spec.verify else None for m in members]


def _write_order(members: list[_Member], tcur) -> list[_Member]:
    tcur.execute(_FK_EDGES)
    edges = [((a, b), (c, d)) for a, b, c, d in tcur.fetchall()]
    by_target = {m.spec.target: m for m in members}
    return [by_target[spec.target] for spec in parents_first([m.spec for m in members], edges)]


def _apply_all(order: list[_Member], tcur, work_mem: str) -> None:
    """Writes of every member in one transaction: inserts and updates parents first,
    then deletes children first."""
    for member in order:
        with member.timer.stage("merge"):
            _upsert(member, tcur, work_mem)
    for member in reversed(order):
        with member.timer.stage("merge"):
            _delete(member, tcur)


def _upsert(member: _Member, cur, work_mem: str) -> None:
    spec, plan = member.spec, member.plan
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


def _delete(member: _Member, cur) -> None:
    spec, counts, key = member.spec, member.counts, member.plan.key_columns()
    deleted = None
    if spec.mode is Mode.FULL_REFRESH and member.shape.referenced_by:
        deleted = delete_rows(cur, spec.target, not_staged(member.staging, key), member.shape)
    elif spec.mode is not Mode.FULL_REFRESH and spec.delete_missing:
        deleted = delete_missing(cur, spec, member.staging, key, member.shape)
    if deleted is not None:
        member.counts = MergeCounts(counts.inserted, counts.updated, deleted, counts.method)


def _verify_all(members: list[_Member], scur, tcur, source_sums: Future) -> list[SyncResult]:
    results = []
    for i, member in enumerate(members):
        spec, plan = member.spec, member.plan
        verification = None
        if spec.verify:
            with member.timer.stage("verify_source"):  # what the writes did not cover
                expected = source_sums.result()[i]
            with member.timer.stage("verify_final"):
                copied = [c.name for c in member.copied]
                verification = check_full_copy(
                    scur, tcur, spec, plan.column_names, member.staging, plan.key_columns(), copied, expected
                )
        tcur.execute(sql.SQL("SELECT count(*) FROM {}").format(spec.target.ident))
        counts = member.counts
        results.append(
            SyncResult(
                table=str(spec.target),
                mode=spec.mode,
                rows_copied=member.rows,
                bytes_copied=member.bytes,
                inserted=counts.inserted,
                updated=counts.updated,
                deleted=counts.deleted,
                target_rows=tcur.fetchone()[0],
                created_target=member.created,
                plan=plan,
                verification=verification,
                stage_seconds=dict(member.timer.seconds),
                removed_orphans=member.orphans,
                method=counts.method,
                schema_changes=tuple(c.description for c in member.changes),
            )
        )
    return results
