"""The two locks a run waits for, both bounded by the table's `lock_timeout` setting.

1. A session-level advisory lock per target table: two runs of one table take turns.
   Waiting for it blocks nobody else, so it is one wait of up to `lock_timeout`.
2. The final table's own lock, at the start of the final transaction (ACCESS EXCLUSIVE
   for TRUNCATE, ROW EXCLUSIVE for MERGE). A lock request that waits makes every later
   request on the table queue behind it: a full refresh waiting ten minutes for a long
   report would stall every new reader for ten minutes. So it is taken in tries of at
   most `lock_attempt_timeout` each, backing off between tries, until `lock_timeout`
   has passed: readers queue behind a try for at most `lock_attempt_timeout`.
"""

from __future__ import annotations

import time

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..errors import LockTimeoutError
from ..plan.spec import TableRef, TableSpec

LOCK_NAMESPACE = "pg_sync_assets:"
SETTING_ADVICE = (
    "raise `lock_timeout` (seconds) for this table in the table list, or for every table under `defaults:`"
)


def _ms(seconds: float) -> str:
    return f"{max(int(seconds * 1000), 1)}ms"


def limit_lock_wait(cur, seconds: float) -> None:
    """lock_timeout for the rest of the caller's transaction."""
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (_ms(seconds),))


def acquire_table_lock(cur, table: TableRef, lock_timeout: float) -> None:
    """Session-level advisory lock on the target table, waiting up to `lock_timeout` seconds."""
    cur.execute("SELECT set_config('lock_timeout', %s, false)", (_ms(lock_timeout),))
    try:
        cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK_NAMESPACE + str(table),))
    except pg_errors.LockNotAvailable:
        cur.connection.rollback()
        raise LockTimeoutError(
            str(table),
            "lock",
            f"another run has been writing this table for more than `lock_timeout` ({lock_timeout:g} s); "
            f"wait for it to finish, or {SETTING_ADVICE}",
            side="target",
        ) from None
    finally:
        cur.execute("RESET lock_timeout")


def release_table_lock(cur, table: TableRef) -> None:
    cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (LOCK_NAMESPACE + str(table),))


# Another role's session shows its pid, role and lock, but not its application, state or
# start (pg_stat_activity hides them without pg_read_all_stats): said so, not shown as 0.
_HOLDERS_QUERY = """
SELECT a.pid, COALESCE(a.usename, '?'), l.mode, a.state IS NOT NULL,
       NULLIF(a.application_name, ''), a.state,
       round(extract(epoch FROM now() - a.xact_start))::int
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid() AND l.relation = (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s)
ORDER BY a.xact_start LIMIT 3
"""


def _holders(cur, table: TableRef) -> str:
    cur.execute(_HOLDERS_QUERY, (table.schema, table.name))
    rows = cur.fetchall()
    if not rows:
        return "the sessions holding it had finished by the last try"
    return "held by " + ", ".join(_holder(*row) for row in rows)


def _holder(pid: int, role: str, mode: str, visible: bool, app: str | None, state: str | None, age) -> str:
    if not visible:
        return (
            f"pid {pid} (role {role}, {mode}; its application, state and age are hidden from this "
            "role: grant it pg_read_all_stats to see them)"
        )
    opened = f"transaction open {age} s" if age is not None else "no transaction open"
    return f"pid {pid} (role {role}, {app or 'no application_name'}, {state}, {mode}, {opened})"


def lock_final_table(cur, spec: TableSpec, mode: str) -> int:
    """LOCK the target in `mode` inside the caller's transaction, in short tries; the
    number of tries. Afterwards the transaction's lock_timeout is what remains of
    `lock_timeout`, for the other locks the final transaction takes."""
    deadline = time.monotonic() + spec.lock_timeout
    statement = sql.SQL("LOCK TABLE {} IN {} MODE").format(spec.target.ident, sql.SQL(mode))
    tries = 0
    while True:
        tries += 1
        wait = min(spec.lock_attempt_timeout, max(deadline - time.monotonic(), 0.001))
        cur.execute("SAVEPOINT pg_sync_lock")
        limit_lock_wait(cur, wait)
        try:
            cur.execute(statement)
        except pg_errors.LockNotAvailable:
            cur.execute("ROLLBACK TO SAVEPOINT pg_sync_lock")
            pause = min(0.1 * 2 ** min(tries, 6), 5.0)
            if time.monotonic() + pause >= deadline:
                raise LockTimeoutError(
                    str(spec.target),
                    "merge",
                    f"could not lock the table ({mode}) within `lock_timeout` ({spec.lock_timeout:g} s, "
                    f"{tries} tries of at most `lock_attempt_timeout` {spec.lock_attempt_timeout:g} s): "
                    f"{_holders(cur, spec.target)}; {SETTING_ADVICE}, or end those sessions; "
                    "the target table is unchanged",
                    side="target",
                ) from None
            time.sleep(pause)
            continue
        cur.execute("RELEASE SAVEPOINT pg_sync_lock")
        limit_lock_wait(cur, max(deadline - time.monotonic(), spec.lock_attempt_timeout))
        return tries
