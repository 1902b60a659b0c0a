"""Parallel copy of one table under one snapshot: N sessions a side, each importing the
run's exported snapshot and copying a disjoint range of pages, verified as one copy."""

from __future__ import annotations

import pytest

from pg_sync_assets.engine import Mode, SyncError, TableRef, TableSpec, VerificationError, connect
from pg_sync_assets.engine.compare import parallel_sums
from pg_sync_assets.engine.compare.localize import bucket_sums, bucketing
from pg_sync_assets.engine.load.parallel_copy import page_ranges
from pg_sync_assets.engine.plan.plan import plan_table
from pg_sync_assets_tests.support import run_sync, table_text, writing_meanwhile

ITEMS = TableRef("public", "items")
SEED = """
CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, v text);
INSERT INTO items SELECT i, i % 7, repeat('v', 200) || i FROM generate_series(1, 60000) i;
ANALYZE items;
"""


def _spec(**kw) -> TableSpec:
    return TableSpec(**{"name": "items", "source": ITEMS, "target": ITEMS, "mode": Mode.FULL_REFRESH,
                        "differential": "never", **kw})


def test_page_ranges_cover_every_page_once_and_leave_the_last_open():
    texts = [repr(c) for c in page_ranges(10, 3)]  # composed SQL, its literals visible
    assert len(texts) == 3
    assert "(0,0)" in texts[0] and "(3,0)" in texts[0]
    assert "(3,0)" in texts[1] and "(6,0)" in texts[1]
    assert "(6,0)" in texts[2] and "ctid <" not in texts[2]


@pytest.mark.parametrize("workers", [2, 4])
def test_a_parallel_copy_equals_the_source_and_uses_that_many_sessions(dbs, workers):
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, v text)")  # the staged path
    result = run_sync(dbs, _spec(parallel=workers, where="grp <> 3"))
    assert result.copy_workers == workers
    assert result.rows_copied == result.verification.final.rows == dbs.src(
        "SELECT count(*) FROM items WHERE grp <> 3")[0][0]
    assert table_text(dbs.target, ITEMS, "id") == table_text(dbs.source, ITEMS, "id", "grp <> 3")


def test_every_worker_reads_the_runs_snapshot_under_a_concurrent_writer(dbs):
    """A writer updates and inserts rows all through the run: workers that each took a
    snapshot of their own would copy rows of different moments, and the verification
    (summed in the run's snapshot) would fail. With the imported snapshot it passes."""
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, v text)")
    statement = ("UPDATE items SET v = v || 'x' WHERE id = %s; "
                 "INSERT INTO items VALUES (100000 + %s, 1, 'new')")
    with writing_meanwhile(dbs.src, statement, lambda n: (n * 97 % 60000 + 1, n)) as writer:
        for _ in range(3):
            result = run_sync(dbs, _spec(parallel=4))
            assert result.copy_workers == 4 and result.verification is not None
    assert writer.count > 0 and writer.alive is False


def test_auto_keeps_a_small_table_in_one_stream_and_a_query_is_never_split(dbs):
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, v text)")
    assert run_sync(dbs, _spec(parallel=0)).copy_workers == 1  # 60,000 rows: under a million
    query = TableSpec(name="items", target=ITEMS, query="SELECT id, grp, v FROM items", primary_key=("id",),
                      mode=Mode.MERGE, differential="never", parallel=4)
    assert run_sync(dbs, query).copy_workers == 1


def test_a_failing_worker_fails_the_run_and_leaves_the_target_as_it_was(dbs):
    """One worker's COPY fails (a check the staging table gets from an event trigger, for
    the rows of one group): the run fails in its copy, the others stop, nothing changes."""
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, v text)")
    dbs.tgt("""
        CREATE FUNCTION refuse_grp() RETURNS event_trigger LANGUAGE plpgsql AS $$
        DECLARE obj record;
        BEGIN
          FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
                     WHERE schema_name = 'sync_staging' AND command_tag = 'CREATE TABLE'
                     AND object_identity LIKE 'sync_staging.stg%' LOOP
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT no_six CHECK (grp <> 6)', obj.object_identity);
          END LOOP;
        END $$;
        CREATE EVENT TRIGGER refuse_grp ON ddl_command_end EXECUTE FUNCTION refuse_grp();
    """)
    try:
        with pytest.raises(SyncError) as caught:
            run_sync(dbs, _spec(parallel=3))
    finally:
        dbs.tgt("DROP EVENT TRIGGER refuse_grp")
    assert str(caught.value).startswith("copy failed for `public.items`")
    assert "no_six" in str(caught.value) and str(caught.value).endswith("the target table is unchanged")
    assert not isinstance(caught.value, VerificationError)
    assert dbs.tgt("SELECT count(*) FROM items") == [(0,)]
    workers = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%%copy worker%%'"
    assert dbs.src(workers) == [(0,)] and dbs.tgt(workers) == [(0,)]


def test_the_comparison_passes_split_by_pages_sum_what_one_session_sums(dbs, monkeypatch):
    """Pass 1 of a comparison with `parallel`: each session sums a range of pages under the
    side's snapshot; together they give exactly one session's sums."""
    dbs.src(SEED)
    opened = []
    real = parallel_sums.sibling_session
    monkeypatch.setattr(parallel_sums, "sibling_session", lambda *a, **k: opened.append(1) or real(*a, **k))
    source = connect(dbs.source, readonly=True)
    try:
        source.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with source.cursor() as cur:
            plan = plan_table(cur, _spec())
        by = bucketing(plan)
        one = bucket_sums(source, _spec(), by, plan.columns, "source", 4096)
        assert opened == []
        three = bucket_sums(source, _spec(parallel=3), by, plan.columns, "source", 4096)
        assert len(opened) == 3
        assert one.as_dict() == three.as_dict() and one.total == three.total
    finally:
        source.close()


def test_a_differential_run_with_parallel_passes_under_a_concurrent_writer(dbs):
    dbs.src(SEED)
    spec = _spec(parallel=3, differential="always")
    run_sync(dbs, spec)
    dbs.src("UPDATE items SET v = v || 'changed' WHERE id % 100 = 1; DELETE FROM items WHERE id % 100 = 2")
    statement = "UPDATE items SET v = v || 'x' WHERE id = %s"
    with writing_meanwhile(dbs.src, statement, lambda n: (n * 97 % 60000 + 1,)):
        result = run_sync(dbs, spec)
    assert result.method == "differential" and result.verification is not None
    assert result.differential.rows_changed >= 600 and result.differential.rows_extra == 600
