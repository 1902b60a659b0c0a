"""Verification inside the load, before anything is committed to the final table.

The source checksum is taken in the same REPEATABLE READ snapshot the copy read, so
writes on a busy source between copy and check cannot cause a false alarm. It runs on
the source server while the target merges (`on_source_meanwhile`); then the final
table's scope is compared with it inside the final transaction, so a mismatch rolls
everything back. Only then, to say where the rows diverged, are the staged rows hashed
too: "staged rows differ" blames the copy, "final table rows differ" the write.

For `merge` without `delete_missing`, rows the source no longer has legitimately stay in
the target, so the final comparison covers the target rows whose keys were staged, and
the others are counted and reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

from psycopg2 import sql

from ..errors import SyncError
from ..load.merge import key_match
from ..load.staging import STAGING_SCHEMA
from ..load.triggers import FIRE, triggers_advice, user_triggers
from ..plan.introspect import Column
from ..plan.spec import Mode, TableSpec
from ..sql import pin_text_settings, where_clause
from .verify import ScopeChecksum, checksum_select, source_checksum, target_checksum

WHOLE_SCOPE = "target scope"  # check_final compared every target row in scope


class VerificationError(SyncError):
    """The staged or final rows differ from the source snapshot; nothing was committed."""


@dataclass(frozen=True)
class LoadVerification:
    source: ScopeChecksum
    final: ScopeChecksum
    final_scope: str
    rows_only_in_target: int = 0


def check_full_copy(
    scur,
    tcur,
    spec: TableSpec,
    columns: Sequence[Column],
    staging: str,
    key: list[Column],
    copied: Sequence[Column],
    expected: ScopeChecksum,
) -> LoadVerification:
    """`check_final` after a full copy of the `copied` columns into `staging`: a mismatch
    is blamed on the copy when the staged rows already differed from the snapshot."""
    try:
        return check_final(tcur, spec, columns, staging, key, expected)
    except VerificationError:
        _blame_the_copy(scur, tcur, spec, staging, copied)
        raise


def _blame_the_copy(scur, tcur, spec: TableSpec, staging: str, copied: Sequence[Column]) -> None:
    """After the final rows differed from the snapshot (the caller is about to roll back):
    if the staged rows already differed from it, raise that instead, as the copy is to
    blame. Reads the source in the run's snapshot, still open."""
    source = source_checksum(scur, spec, copied)
    require_staged_equal(str(spec.target), source, staged_checksum(tcur, staging, copied))


def _differ(what: str, source: ScopeChecksum, other: ScopeChecksum, outcome: str) -> str:
    return (
        f"{what} differ from the source snapshot that was copied: source {source.rows} rows, "
        f"checksum {source.checksum_hex}; {what} {other.rows} rows, checksum {other.checksum_hex}; "
        f"{outcome}"
    )


def staged_checksum(cur, staging: str, copied: Sequence[Column]) -> ScopeChecksum:
    pin_text_settings(cur)
    cur.execute(
        sql.SQL("SELECT {} FROM {}").format(checksum_select(copied), sql.Identifier(STAGING_SCHEMA, staging))
    )
    rows, total = cur.fetchone()
    return ScopeChecksum(rows, Decimal(total))


def require_staged_equal(table: str, expected: ScopeChecksum, staged: ScopeChecksum) -> None:
    if staged != expected:
        raise VerificationError(
            table,
            "verify",
            _differ("staged rows", expected, staged, "rolled back: the target table is unchanged"),
        )


@contextmanager
def on_source_meanwhile(scur, work, *args) -> Iterator[Future]:
    """`work(*args)`, which reads through `scur`, on a worker thread while the caller
    writes the target (two servers: both work at once); cancelled on the source if the
    caller fails first. The caller touches `scur` only after the future's result."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(work, *args)
        try:
            yield future
        except BaseException:
            if not future.done():
                scur.connection.cancel()  # the caller's rollback ends the source transaction
            raise


def check_final(
    cur,
    spec: TableSpec,
    columns: Sequence[Column],
    staging: str,
    key: list[Column],
    expected: ScopeChecksum,
    whole_scope: bool = False,
) -> LoadVerification:
    """Compare the final table with the snapshot inside the open final transaction.

    `whole_scope` compares the whole target scope even for a merge without
    `delete_missing` (a reconcile must leave the scopes equal, extra rows included).
    A mismatch raises VerificationError (`check_full_copy` also tells where it arose).
    """
    pin_text_settings(cur)
    keeps_extra_rows = spec.mode in (Mode.MERGE, Mode.INCREMENTAL) and not spec.delete_missing
    if keeps_extra_rows and not whole_scope:
        staged_key = sql.SQL("EXISTS (SELECT 1 FROM {} AS s WHERE {})").format(
            sql.Identifier(STAGING_SCHEMA, staging), key_match(key)
        )
        cur.execute(
            sql.SQL("SELECT {} FROM {} AS t{}").format(
                checksum_select(columns), spec.target.ident, where_clause(spec, staged_key)
            )
        )
        rows, total = cur.fetchone()
        final = ScopeChecksum(rows, Decimal(total))
        cur.execute(sql.SQL("SELECT count(*) FROM {}{}").format(spec.target.ident, where_clause(spec)))
        verification = LoadVerification(
            expected, final, "target rows with staged keys", cur.fetchone()[0] - rows
        )
    else:
        final = target_checksum(cur, spec, columns)
        verification = LoadVerification(expected, final, WHOLE_SCOPE)
    require_final_equal(cur, spec, expected, final)
    return verification


def require_final_equal(cur, spec: TableSpec, expected: ScopeChecksum, final: ScopeChecksum) -> None:
    """VerificationError (the caller rolls back) unless the final rows match the snapshot;
    the message names the target's triggers that fired on the written rows, if any."""
    if final == expected:
        return
    outcome = "rolled back: the target table is unchanged"
    fired = user_triggers(cur, spec.target) if spec.target_triggers == FIRE else []
    if fired:
        outcome = f"{triggers_advice(fired)}; {outcome}"
    raise VerificationError(str(spec.target), "verify", _differ("final table rows", expected, final, outcome))
