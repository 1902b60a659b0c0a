"""The scaffolding every run of a table shares: stage timing and error wording, the
plan step, and the advisory lock + staging table lifecycle (`staged_run`).

Whatever happens inside `staged_run`, the staging table is dropped and the lock
released; if the process dies instead, the next run of the table drops the staging table
and the server releases the session's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2

from ..errors import ConfigError, SyncError
from ..load.staging import (
    STAGING_SCHEMA,
    create_staging,
    drop_orphaned_staging,
    drop_run_tables,
    ensure_staging_schema,
    new_staging_name,
)
from ..load.triggers import DISABLE, disable_user_triggers, forget_disabled, restore_triggers
from ..plan.evolve import SchemaChange, plan_schema_changes
from ..plan.introspect import Column, table_columns
from ..plan.plan import TablePlan, plan_table
from ..plan.side_effects import require_side_effect_free
from ..plan.spec import TableSpec
from ..plan.target import TargetShape, read_target_shape, require_writable_target
from ..verify.record import ensure_record_table
from .locks import acquire_table_lock, lock_final_table, release_table_lock
from .stages import COMMIT_UNKNOWN, UNCHANGED, StageTimer


@dataclass(frozen=True)
class SyncOptions:
    merge_work_mem: str = "256MB"
    progress_interval: float = 5.0


@dataclass
class Run:
    """One table's run, as every stage sees it: what to sync (`spec`, `plan`, the columns
    `copied`, the schema `changes`), the sessions (`scur` on the source, in the run's
    snapshot; `tcur` on the target), the `staging` table, the `timer` that names a failing
    stage, the `options` and the `log`. Stages take the run, not a dozen parameters."""

    spec: TableSpec
    plan: TablePlan
    copied: list[Column]
    changes: list[SchemaChange]
    timer: StageTimer
    options: SyncOptions
    log: logging.Logger
    staging: str = ""
    scur: Any = None
    tcur: Any = None

    @property
    def label(self) -> str:
        return str(self.spec.target)

    @property
    def target_conn(self):
        return self.tcur.connection


def _generated_in_target(plan: TablePlan, target_cols: list[Column]) -> set[str]:
    if target_cols:
        return {c.name for c in target_cols if c.generated_expr is not None}
    return {c.name for c in plan.columns if c.generated_expr is not None}


def prepare(
    spec: TableSpec, source_conn, target_conn, timer: StageTimer, snapshot: str | None = None
) -> tuple[TablePlan, list[Column], list[SchemaChange]]:
    """Open the source snapshot, plan, check the target's shape; the columns to copy and
    the changes `on_schema_change` will make to the target in the final transaction.

    The source stays in its REPEATABLE READ transaction: whatever reads it next (copy,
    checksums, localization) sees the same snapshot as the plan.
    """
    open_snapshot(source_conn, target_conn, snapshot)
    with timer.stage("plan"), source_conn.cursor() as scur, target_conn.cursor() as tcur:
        return plan_copy(scur, tcur, spec)


def open_snapshot(source_conn, target_conn, snapshot: str | None = None) -> None:
    """End whatever is open; the source in a read-only REPEATABLE READ transaction (its
    snapshot starts with the next query, or is the exported `snapshot`), the target in
    autocommit."""
    source_conn.rollback()
    target_conn.rollback()
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    if snapshot is not None:
        with source_conn.cursor() as cur:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
    target_conn.autocommit = True


def plan_copy(scur, tcur, spec: TableSpec) -> tuple[TablePlan, list[Column], list[SchemaChange]]:
    """`preflight`, then the columns to copy: all but those the target generates itself."""
    plan, target_cols, changes = preflight(scur, tcur, spec)
    skip = _generated_in_target(plan, target_cols)
    return plan, [c for c in plan.columns if c.name not in skip], changes


def preflight(scur, tcur, spec: TableSpec) -> tuple[TablePlan, list[Column], list[SchemaChange]]:
    """Everything both catalogs can tell before a copy: the source side (`plan_table`),
    an existing target's columns (and the schema changes `on_schema_change` allows) and
    its shape. Raises ConfigError or SchemaMismatchError; the start of every run and
    `python -m pg_sync_assets check`."""
    plan = plan_table(scur, spec)
    require_side_effect_free(tcur, spec, "target")
    target_cols = table_columns(tcur, spec.target)
    typos = [c for c in plan.excluded_elsewhere if c not in {t.name for t in target_cols}]
    if typos and not spec.columns_where_present:
        raise ConfigError(
            f"table entry `{spec.name}`: `columns.exclude` names column(s) {typos} that neither the "
            f"source nor the target has; source columns: {[c.name for c in plan.columns]}"
        )
    changes = plan_schema_changes(spec, list(plan.columns), target_cols, plan.key) if target_cols else []
    shape = read_target_shape(tcur, spec.target)
    if shape is not None:
        require_writable_target(spec.target, shape, spec.mode, plan.key)
    return plan, target_cols, changes


@contextmanager
def staged_run(
    spec: TableSpec, target_conn, copied: list[Column], timer: StageTimer, log
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Hold the table's lock and a fresh staging table; yield (staging name, orphans removed)."""
    label = str(spec.target)
    with target_conn.cursor() as tcur:
        with timer.stage("lock"):
            acquire_table_lock(tcur, spec.target, spec.lock_timeout)
        try:
            with timer.stage("staging"):
                ensure_staging_schema(tcur)
                ensure_record_table(tcur)
                orphans = tuple(drop_orphaned_staging(tcur, spec.target))
                if orphans:
                    log.warning(
                        "removed staging tables left by an earlier killed run of `%s`: %s",
                        label,
                        ", ".join(orphans),
                    )
                staging = new_staging_name(spec.target)
                create_staging(tcur, spec.target, staging, copied)
            try:
                yield staging, orphans
            finally:
                _drop_staging_quietly(target_conn, staging, label, log)
        finally:
            _release_quietly(target_conn, spec, log)


def open_for_changes(cur, spec: TableSpec, key: tuple[str, ...], work_mem: str) -> TargetShape:
    """In the final transaction, before rows are changed in an existing final table (the
    differential writes, a cdc batch): its shape, checked writable, locked for the
    writes, with its triggers off where the entry says so."""
    cur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
    shape = read_target_shape(cur, spec.target)
    if shape is None:
        raise ConfigError(f"`{spec.target}` was dropped during the run; run it again")
    require_writable_target(spec.target, shape, spec.mode, key)
    lock_final_table(cur, spec, "ROW EXCLUSIVE")
    if spec.target_triggers == DISABLE:
        disable_user_triggers(cur, spec.target)
    return shape


def rollback_quietly(conn) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg2.Error:
        pass  # a dead connection has nothing left to roll back


def end_run_transactions(source_conn, target_conn) -> None:
    """Roll back whatever is open and give the target back its autocommit mode.

    Runs in `finally` blocks, so it must not raise: an exception here would replace
    the error that explains the failure (a lost connection is already closed).
    """
    rollback_quietly(source_conn)
    rollback_quietly(target_conn)
    try:
        if not target_conn.closed:
            target_conn.autocommit = True
    except psycopg2.Error:
        pass


def require_read_only_source(scur, table: str) -> None:
    """A tripwire before the target commits: the source transaction is still read-only,
    has written nothing, and the session still lexes SQL as the table list's was checked.
    The table list's SQL can neither end that transaction (`user_sql`) nor call anything
    volatile (`side_effects`); this proves it held for the whole run."""
    scur.execute(
        "SELECT current_setting('transaction_read_only') = 'on'"
        " AND current_setting('standard_conforming_strings') = 'on',"
        " pg_current_xact_id_if_assigned()"
    )
    read_only, xid = scur.fetchone()
    if not read_only or xid is not None:
        raise SyncError(
            table,
            "verify",
            "the source session left its read-only transaction during the run; nothing was "
            "committed to the target; check the table's `where` and `query` and the source "
            "database's triggers and rules",
            side="source",
        )


class FinalTransaction:
    """The target's last transaction of a run, where the final table changes.

    Its id is taken when it opens, so that both ends of it can be proven: `commit` runs
    only in that same transaction (nothing the run sent committed it earlier), and an
    error that says the target is unchanged is re-worded if, after the rollback, the
    server reports that transaction committed after all.
    """

    def __init__(self, scur, tcur, table: str) -> None:
        self.scur, self.tcur, self.table = scur, tcur, table
        if tcur.connection.autocommit:  # only ever outside a transaction
            tcur.connection.autocommit = False
        forget_disabled(tcur.connection)
        tcur.execute("SELECT pg_current_xact_id()::text")
        self.xid = tcur.fetchone()[0]

    def commit(self) -> None:
        restore_triggers(self.tcur)
        require_read_only_source(self.scur, self.table)
        self.tcur.execute(
            "SELECT pg_current_xact_id_if_assigned()::text = %s"
            " AND current_setting('standard_conforming_strings') = 'on'",
            (self.xid,),
        )
        if not self.tcur.fetchone()[0]:
            raise SyncError(
                self.table,
                "commit",
                "the target session is no longer in the transaction the run opened (or its settings "
                "changed); nothing more was committed; check the table's `where` and the target "
                f"database's triggers; {self._outcome()}",
                side="target",
            )
        self.tcur.connection.commit()

    def _outcome(self) -> str:
        """After a rollback: whether the transaction the run opened committed anyway. A
        session that died took its open transaction with it: nothing to ask then."""
        conn = self.tcur.connection
        if conn.closed:
            return UNCHANGED
        rollback_quietly(conn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_xact_status(%s::xid8)", (self.xid,))
                status = cur.fetchone()[0]
            conn.rollback()
        except psycopg2.Error:
            return COMMIT_UNKNOWN
        if status == "aborted":
            return UNCHANGED
        return (
            "but the run's target transaction was committed before it failed, so the target table "
            "may have changed: run the table's checks (verify_all) and reconcile it"
        )

    def proven(self, exc: SyncError) -> SyncError:
        """`exc`, or its cause re-worded when its claim that the target is unchanged is false."""
        if UNCHANGED not in exc.cause:
            return exc
        outcome = self._outcome()
        if outcome == UNCHANGED:
            return exc
        cause = exc.cause.replace("rolled back: " + UNCHANGED, outcome).replace(UNCHANGED, outcome)
        return SyncError(exc.table, exc.stage, cause, side=exc.side)


@contextmanager
def final_transaction(scur, tcur, table: str) -> Iterator[FinalTransaction]:
    """Open the target's final transaction; see `FinalTransaction`."""
    final = FinalTransaction(scur, tcur, table)
    try:
        yield final
    except BaseException as exc:
        forget_disabled(tcur.connection)
        if not isinstance(exc, SyncError):
            raise
        proven = final.proven(exc)
        if proven is exc:
            raise
        raise proven from None


def _drop_staging_quietly(conn, staging: str, label: str, log) -> None:
    try:
        rollback_quietly(conn)
        conn.autocommit = True
        with conn.cursor() as cur:
            drop_run_tables(cur, staging)
    except psycopg2.Error as exc:
        log.warning(
            "could not drop staging table %s.%s of `%s` (%s); the next run of this table drops it",
            STAGING_SCHEMA,
            staging,
            label,
            type(exc).__name__,
        )


def _release_quietly(conn, spec: TableSpec, log) -> None:
    try:
        with conn.cursor() as cur:
            release_table_lock(cur, spec.target)
    except psycopg2.Error:
        # The lock is a session lock: closing the connection releases it.
        log.debug("advisory lock of `%s` released by closing the session", spec.target)
