"""`retries:`: a fault that passes is retried (the failed attempt left the target as it
was); a fault that would come back is not retried at all."""

from __future__ import annotations

import threading
import time

import psycopg2
from dagster import DagsterEventType, DagsterInstance

from pg_sync_assets import build_defs
from pg_sync_assets_tests.support import point_definitions_at

SEED = """
CREATE TABLE items (id int PRIMARY KEY, label text);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 300) i;
"""

CONFIG = """
defaults:
  retries: {max_retries: 4, delay: 1, backoff: linear}
tables:
  - source: public.items
    lock_timeout: 0.5
    lock_attempt_timeout: 0.5
  - source: public.gone
"""


WAITERS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


def _hold_until_one_attempt_gave_up(holder, deadline: float = 60.0) -> None:
    """Keep the lock until a run has queued for it and given up, then let go."""
    started, seen_waiting = time.monotonic(), False
    with holder.cursor() as cur:
        while time.monotonic() - started < deadline:
            cur.execute(WAITERS)
            waiting = cur.fetchone()[0] > 0
            if seen_waiting and not waiting:
                break
            seen_waiting = seen_waiting or waiting
            time.sleep(0.05)
    holder.close()


def _events(result, kind: DagsterEventType, step: str) -> list:
    return [e for e in result.all_events if e.event_type == kind and e.step_key == step]


def test_a_lock_held_for_a_while_is_outlasted_by_retries_and_a_missing_table_is_not_retried(
    dbs, tmp_path, monkeypatch
):
    path = point_definitions_at(dbs, tmp_path, monkeypatch, SEED, CONFIG)
    dbs.tgt("CREATE TABLE public.items (id int PRIMARY KEY, label text)")
    holder = psycopg2.connect(dbs.target)
    holder.autocommit = True
    with holder.cursor() as cur:  # another run writing `items`, until the first attempt gave up
        cur.execute("SELECT pg_advisory_lock(hashtextextended('pg_sync_assets:public.items', 0))")
    release = threading.Thread(target=_hold_until_one_attempt_gave_up, args=(holder,))
    release.start()
    try:
        result = build_defs(path).resolve_job_def("sync_all").execute_in_process(
            instance=DagsterInstance.ephemeral(), raise_on_error=False)
    finally:
        release.join()

    retried = _events(result, DagsterEventType.STEP_UP_FOR_RETRY, "items")
    assert retried, "the lock timeout should have been retried"
    assert "another run has been writing this table" in str(retried[0].event_specific_data.error.cause)
    assert _events(result, DagsterEventType.STEP_SUCCESS, "items")
    assert dbs.tgt("SELECT count(*) FROM public.items") == [(300,)]

    # A missing source table would be missing again: one attempt, failed with the reason.
    assert not _events(result, DagsterEventType.STEP_UP_FOR_RETRY, "gone")
    [failure] = _events(result, DagsterEventType.STEP_FAILURE, "gone")
    assert "source table `public.gone` does not exist in the source database" in str(
        failure.event_specific_data.error.message)
