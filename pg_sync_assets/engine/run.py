"""The scaffolding every run of a table shares: stage timing and error wording, the
plan step, and the advisory lock + staging table lifecycle (`staged_run`).

Whatever happens inside `staged_run`, the staging table is dropped and the lock
released; if the process dies instead, the next run of the table drops the staging table
and the server releases the session's lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from .ddl import require_matching_schema
from .errors import PgSyncError, SyncError
from .introspect import Column, table_columns
from .plan import TablePlan, plan_table
from .spec import TableSpec
from .staging import (
    STAGING_SCHEMA,
    acquire_table_lock,
    create_staging,
    drop_orphaned_staging,
    drop_staging,
    ensure_staging_schema,
    new_staging_name,
    release_table_lock,
)

# What to do about the errors users meet most (SQLSTATE -> advice).
_HINTS = {
    "42501": "check grants: the source user needs SELECT on the source table; the target "
    "user needs CREATE on the target database (for the sync_staging schema) and INSERT, "
    "UPDATE, DELETE, TRUNCATE on the target table; ",
    "53200": "the server ran out of memory; lower merge_work_mem or the server's work_mem; ",
    "57014": "a statement was cancelled (statement_timeout or an operator); ",
    "55P03": "another session holds a lock on the table for longer than lock_timeout_ms; ",
}


class StageTimer:
    def __init__(self, table: str) -> None:
        self.table = table
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except PgSyncError:
            raise
        except psycopg2.Error as exc:
            detail = (exc.pgerror or str(exc)).strip().replace("\n", " ")
            hint = _HINTS.get(exc.pgcode or "", "")
            raise SyncError(self.table, name, f"{detail}; {hint}the target table is unchanged") from exc
        finally:
            self.seconds[name] = round(time.monotonic() - started, 3)


def _generated_in_target(plan: TablePlan, target_cols: list[Column]) -> set[str]:
    if target_cols:
        return {c.name for c in target_cols if c.generated_expr is not None}
    return {c.name for c in plan.columns if c.generated_expr is not None}


def prepare(spec: TableSpec, source_conn, target_conn, timer: StageTimer) -> tuple[TablePlan, list[Column]]:
    """Open the source snapshot, plan, check the target's shape; the columns to copy.

    The source stays in its REPEATABLE READ transaction: whatever reads it next (copy,
    checksums, localization) sees the same snapshot as the plan.
    """
    source_conn.rollback()
    target_conn.rollback()
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    target_conn.autocommit = True
    with timer.stage("plan"), source_conn.cursor() as scur, target_conn.cursor() as tcur:
        plan = plan_table(scur, spec)
        target_cols = table_columns(tcur, spec.target)
        if target_cols:
            require_matching_schema(spec.target, list(plan.columns), target_cols)
        skip = _generated_in_target(plan, target_cols)
    return plan, [c for c in plan.columns if c.name not in skip]


@contextmanager
def staged_run(
    spec: TableSpec, target_conn, copied: list[Column], timer: StageTimer, lock_timeout_ms: int, log
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Hold the table's lock and a fresh staging table; yield (staging name, orphans removed)."""
    label = str(spec.target)
    with target_conn.cursor() as tcur:
        with timer.stage("lock"):
            acquire_table_lock(tcur, spec.target, lock_timeout_ms)
        try:
            with timer.stage("staging"):
                ensure_staging_schema(tcur)
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


def rollback_quietly(conn) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg2.Error:
        pass  # a dead connection has nothing left to roll back


def _drop_staging_quietly(conn, staging: str, label: str, log) -> None:
    try:
        rollback_quietly(conn)
        conn.autocommit = True
        with conn.cursor() as cur:
            drop_staging(cur, staging)
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
