"""Incremental windows in the engine: exact boundaries, lookback, late rows, ranges."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest
from psycopg2 import sql

from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect, sync_table
from pg_sync_assets.engine.plan.introspect import table_columns
from pg_sync_assets.engine.plan.window import Window, window_condition
from pg_sync_assets.engine.sql import source_scope
from pg_sync_assets_tests.support import sessions, table_text

EVENTS = TableRef("public", "events")
UTC = timezone.utc


def _hour(h: int, day: int = 20) -> datetime:
    return datetime(2026, 11, day, h, tzinfo=UTC)


def _spec(**kw) -> TableSpec:
    base = {"name": "events", "target": EVENTS, "source": EVENTS, "mode": Mode.INCREMENTAL,
            "incremental_column": "updated_at", "partition_start": "2026-11-20-00:00", "lookback": 0}
    return TableSpec(**{**base, **kw})


def _sync(dbs, spec: TableSpec, start: datetime, end: datetime):
    with sessions(dbs) as (source, target):
        return sync_table(spec, source, target, window=Window(start, end))


def _seed(dbs) -> None:
    dbs.src("""
        CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz, v text);
        CREATE INDEX ON events (updated_at);
        INSERT INTO events VALUES
          (1, '2026-11-20 04:59:59.999999+00', 'before'),
          (2, '2026-11-20 05:00:00+00', 'first instant'),
          (3, '2026-11-20 05:59:59.999999+00', 'last instant'),
          (4, '2026-11-20 06:00:00+00', 'next hour'),
          (5, NULL, 'no cursor');
        INSERT INTO events SELECT 100 + i, timestamptz '2026-11-20 00:00+00' + i * interval '37 seconds', 'v'
        FROM generate_series(0, 2300) AS i;
    """)


def _ids(dbs) -> list[int]:
    return [r[0] for r in dbs.tgt("SELECT id FROM events WHERE id < 100 ORDER BY id")]


def test_window_boundaries_are_exact_and_null_cursors_are_counted(dbs):
    _seed(dbs)
    result = _sync(dbs, _spec(), _hour(5), _hour(6))

    assert _ids(dbs) == [2, 3]
    assert dbs.tgt("SELECT count(*) FROM events WHERE updated_at < '2026-11-20 05:00+00' "
                   "OR updated_at >= '2026-11-20 06:00+00'") == [(0,)]
    assert result.hour_counts == {"2026-11-20-05:00": result.rows_copied}
    assert result.null_cursor_rows == 1
    assert result.verification.final == result.verification.source
    assert dbs.tgt("SELECT count(*) FROM pg_indexes WHERE tablename = 'events' "
                   "AND indexdef LIKE '%%(updated_at)'") == [(1,)]


@pytest.mark.parametrize("column_type", ["timestamp", "date"])
def test_wall_clock_columns_use_the_partition_timezone(dbs, column_type):
    dbs.src(f"CREATE TABLE events (id int PRIMARY KEY, updated_at {column_type}); INSERT INTO events VALUES "
            "(1, '2026-11-20 09:00:00'), (2, '2026-11-20 09:59:59.999999'), (3, '2026-11-20 10:00:00'), "
            "(4, '2026-11-21 00:00:00')")
    spec = _spec(timezone="Asia/Seoul")
    # 09:00 in Seoul is 00:00 UTC: the window of partition 2026-11-20-09:00 (Seoul).
    result = _sync(dbs, spec, _hour(0), _hour(1))
    if column_type == "timestamp":
        assert _ids(dbs) == [1, 2] and result.hour_counts == {"2026-11-20-09:00": 2}
    else:  # dates belong to the hour their midnight starts: none start at 09:00
        assert _ids(dbs) == [] and result.rows_copied == 0
        _sync(dbs, spec, _hour(15, day=20), _hour(16, day=20))  # 00:00 Seoul on the 21st
        assert _ids(dbs) == [4]


def test_a_row_updated_into_another_hour_is_upserted_and_rerun_is_idempotent(dbs):
    _seed(dbs)
    _sync(dbs, _spec(), _hour(5), _hour(6))
    dbs.src("UPDATE events SET updated_at = '2026-11-20 07:30+00', v = 'moved' WHERE id = 2")

    moved = _sync(dbs, _spec(), _hour(7), _hour(8))
    again = _sync(dbs, _spec(), _hour(5), _hour(6))

    assert moved.updated == 1
    assert dbs.tgt("SELECT v FROM events WHERE id = 2") == [("moved",)]
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert again.verification.final == again.verification.source


def test_a_range_is_one_pass_equal_to_the_union_of_its_hours(dbs, servers):
    _seed(dbs)
    whole = _sync(dbs, _spec(), _hour(0), _hour(0, day=21))
    one_pass = table_text(dbs.target, EVENTS, "id")
    dbs.tgt("DROP TABLE events")
    hourly = [_sync(dbs, _spec(), _hour(h), _hour(h) + timedelta(hours=1)) for h in range(24)]

    assert table_text(dbs.target, EVENTS, "id") == one_pass
    assert whole.rows_copied == sum(r.rows_copied for r in hourly) == len(one_pass)
    assert whole.hour_counts == {k: v for r in hourly for k, v in r.hour_counts.items()}
    assert len(whole.hour_counts) == 24


@pytest.mark.parametrize("lookback", [0, 1])
def test_a_row_committed_after_its_hour_was_loaded_needs_the_lookback(dbs, lookback):
    _seed(dbs)
    late = psycopg2.connect(dbs.source)
    try:
        with late.cursor() as cur:  # begins before the 05:00 load, commits after it
            cur.execute("INSERT INTO events VALUES (50, '2026-11-20 05:30+00', 'late')")
            _sync(dbs, _spec(lookback=lookback), _hour(5), _hour(6))
        late.commit()
    finally:
        late.close()
    assert 50 not in _ids(dbs)

    result = _sync(dbs, _spec(lookback=lookback), _hour(6), _hour(7))

    assert (50 in _ids(dbs)) is (lookback == 1)
    assert result.verification.final == result.verification.source
    if lookback:
        assert set(result.hour_counts) == {"2026-11-20-05:00", "2026-11-20-06:00"}


def test_the_window_query_uses_the_source_index(dbs):
    _seed(dbs)
    dbs.src("ANALYZE events")
    conn = connect(dbs.source, readonly=True)
    try:
        with conn.cursor() as cur:
            column = next(c for c in table_columns(cur, EVENTS) if c.name == "updated_at")
            spec = replace(_spec(), window=window_condition(column, Window(_hour(5), _hour(6)), "UTC", 1))
            cur.execute(sql.SQL("EXPLAIN {}").format(source_scope(spec, sql.SQL("*"))))
            plan = "\n".join(r[0] for r in cur.fetchall())
    finally:
        conn.close()
    assert "events_updated_at_idx" in plan
