"""A first load: the target table does not exist yet, so its rows need not be written
twice (once into staging, again by INSERT ... SELECT into the final table).

Inside the run's final transaction the table is created without its key, the source
rows stream straight into it (`COPY ... FREEZE`: the table was created in this
transaction, so the rows are written frozen and nobody else can see it yet), then the
key and the cursor's index are built once over the loaded rows, the table is verified
against the source snapshot, and the transaction commits: a failure at any point leaves
no table behind. Duplicate keys in the source fail the key's build, with the key named.

Columns whose type travels as text (user-defined types: their OIDs differ between
servers) need the staging table's cast on the way in; such tables take the staged path.
"""

from __future__ import annotations

import re
from contextlib import ExitStack

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..plan.introspect import Column
from ..plan.spec import TableSpec
from ..plan.target import read_target_shape
from ..run.context import Run, final_transaction
from ..verify.guard import check_final, on_source_meanwhile
from ..verify.record import take_horizon, write_record
from .copy import CopyResult, source_copy_statement, stream_copy
from .ddl import add_key_and_cursor_index, create_target_table, ensure_namespace
from .merge import MergeCounts, duplicate_keys

FIRST_LOAD = "first_load"  # MergeCounts.method: copied straight into the table it created


def loads_directly(spec: TableSpec, copied: list[Column], tcur) -> bool:
    """Whether this run is a first load that can skip staging: no target table yet, no
    window (an hourly or cursor run counts its rows from staging), no column that must
    be cast on the way in."""
    if spec.window is not None or spec.by_integer_cursor or spec.hourly:
        return False
    if any(c.travels_as_text for c in copied):
        return False
    missing = read_target_shape(tcur, spec.target) is None
    tcur.connection.rollback()  # no transaction left open by the read: the caller sets autocommit
    return missing


def _copy_in_statement(spec: TableSpec, copied: list[Column]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(
        spec.target.ident, sql.SQL(", ").join(sql.Identifier(c.name) for c in copied)
    )


def load_new_table(run: Run, sums, report) -> tuple[CopyResult, MergeCounts, object]:
    """Create, fill, index and verify the target in one transaction and commit it;
    (the copy, the counts, the verification or None). `sums(rows)` sums the source
    snapshot for the verification (run on the source while the target builds its key)."""
    spec, plan, copied, scur, tcur, timer = run.spec, run.plan, run.copied, run.scur, run.tcur, run.timer
    label, target_conn, interval = run.label, run.target_conn, run.options.progress_interval
    target_conn.autocommit = False
    with timer.stage("create"):  # the schema and types, committed apart: the copy holds no lock on them
        ensure_namespace(tcur, spec.target, list(plan.columns))
        target_conn.commit()
    verification = None
    with final_transaction(scur, tcur, label) as final, ExitStack() as meanwhile:
        with timer.stage("copy", heartbeat=False):
            create_target_table(tcur, spec.target, list(plan.columns), plan.key, with_key=False)
            copied_result = stream_copy(
                scur,
                tcur,
                source_copy_statement(spec, copied),
                _copy_in_statement(spec, copied),
                on_progress=report,
                progress_interval=interval,
            )
        if spec.verify:
            source_sums = meanwhile.enter_context(on_source_meanwhile(scur, sums, copied_result.rows))
        with timer.stage("index"):
            try:
                add_key_and_cursor_index(tcur, spec.target, plan.key, spec.incremental_column)
            except pg_errors.UniqueViolation as exc:  # "Key (k)=(v) is duplicated."
                found = re.search(r"=(\(.*\)) is duplicated", exc.diag.message_detail or "")
                example = [found.group(1)] if found else []
                raise duplicate_keys(label, "index", list(plan.key), example) from None
        if spec.verify:
            with timer.stage("verify_source"):
                expected, buckets = source_sums.result()
            with timer.stage("verify_final"):
                horizon = take_horizon(tcur) if spec.where is None else None
                key = plan.key_columns()
                verification = check_final(tcur, spec, plan.columns, "", key, expected, whole_scope=True)
                if horizon is not None:
                    write_record(tcur, spec, plan.columns, horizon, verification.final, buckets)
        with timer.stage("commit"):
            final.commit()
    rows = copied_result.rows
    return copied_result, MergeCounts(inserted=rows, updated=0, deleted=0, method=FIRST_LOAD), verification
