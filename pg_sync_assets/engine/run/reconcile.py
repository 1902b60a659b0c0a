"""Reconcile: repair exactly the rows verification finds different.

In one source snapshot: the scope's checksum, the localization of differing keys, and a
copy of just the missing and changed rows into staging. Then, in one target transaction:
upsert those rows, delete the target rows the source scope does not have, and compare
the whole target scope with the snapshot before committing. Rows that were equal are
not touched. This is also how rows deleted in the source reach tables loaded by
`merge` without `delete_missing`.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from ..compare.differential import LISTED, keys_table
from ..compare.differential_write import apply_differing_rows, copy_differing_rows
from ..compare.localize import bucketing, localize
from ..errors import ConfigError, SchemaMismatchError
from ..plan.introspect import table_exists
from ..sql import estimate_rows
from ..verify.guard import check_final
from ..verify.verify import ScopeChecksum
from .context import Run, SyncOptions, end_run_transactions, final_transaction, prepare, staged_run
from .stages import StageTimer
from .sync import SyncResult, sync_table

_log = logging.getLogger("pg_sync_assets")


def reconcile_table(
    spec, source_conn, target_conn, *, options: SyncOptions | None = None, log: logging.Logger | None = None
) -> SyncResult:
    log = log or _log
    options = options or SyncOptions()
    label = str(spec.target)
    timer = StageTimer(label, source_conn, target_conn, log, options.progress_interval)
    plan, copied, changes = prepare(spec, source_conn, target_conn, timer)
    if changes:
        raise SchemaMismatchError(
            f"cannot reconcile `{label}`: its target needs schema changes first ("
            + "; ".join(c.description for c in changes)
            + "); materialize the asset (a sync applies them), then reconcile; nothing was written"
        )
    if not plan.key:
        # Without a key no row can be named: the repair is a verified copy of the whole scope.
        log.info("reconcile `%s`: no key to tell rows apart; copying the whole scope again", label)
        return sync_table(spec, source_conn, target_conn, options=options, log=log)
    with target_conn.cursor() as tcur:
        if not table_exists(tcur, spec.target):
            raise ConfigError(
                f"cannot reconcile `{label}`: the target table does not exist; materialize it first"
            )
    run = Run(spec, plan, copied, changes, timer, options, log)
    with staged_run(spec, target_conn, copied, timer, log) as (run.staging, orphans):
        with source_conn.cursor() as run.scur, target_conn.cursor() as run.tcur:
            scur, tcur = run.scur, run.tcur
            try:
                with timer.stage("localize"):
                    target_conn.autocommit = False
                    rows_hint = estimate_rows(scur, spec)
                    diff = localize(
                        spec,
                        source_conn,
                        target_conn,
                        bucketing(plan),
                        plan.columns,
                        rows_hint,
                        limit=LISTED,
                        keys_table=keys_table(run.staging),
                    )
                    target_conn.rollback()
                # Pass 1 of localize summed the whole source scope in the snapshot: that is
                # the checksum the repaired target must match.
                expected = ScopeChecksum(diff.source_rows, Decimal(diff.source_sum))
                log.info(
                    "reconcile `%s`: %d missing, %d extra, %d changed rows",
                    label,
                    diff.missing_count,
                    diff.extra_count,
                    diff.changed_count,
                )
                with timer.stage("copy"):
                    rows, bytes_ = copy_differing_rows(run, diff)
                with final_transaction(scur, tcur, label) as final:
                    with timer.stage("merge"):
                        counts = apply_differing_rows(run, diff, rows, True)
                    with timer.stage("verify_final"):
                        key = plan.key_columns()
                        verification = check_final(
                            tcur, spec, plan.columns, run.staging, key, expected, whole_scope=True
                        )
                    with timer.stage("commit"):
                        final.commit()
            finally:
                end_run_transactions(source_conn, target_conn)
    return SyncResult(
        table=label,
        mode=spec.mode,
        rows_copied=rows,
        bytes_copied=bytes_,
        **counts.fields(),
        target_rows=verification.final.rows,
        created_target=False,
        plan=plan,
        verification=verification,
        stage_seconds=dict(timer.seconds),
        removed_orphans=orphans,
        difference=diff,
    )
