"""full_refresh and merge against real source and target servers."""

from __future__ import annotations

import logging

import pytest

from pg_sync_assets.engine import Mode, SyncError, SyncOptions, TableRef, TableSpec
from pg_sync_assets_tests.support import compare, run_sync, table_text

ORDERS = TableRef("public", "orders")


def _seed_orders(dbs, rows: int = 1000) -> None:
    dbs.src("""
        CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, total numeric(10,2),
                             note text);
        INSERT INTO orders SELECT i, CASE WHEN mod(i, 3) = 0 THEN 'paid' ELSE 'new' END,
                                  i * 1.25, 'note ' || i
        FROM generate_series(1, %s) AS i;
    """, (rows,))


def _spec(**kw) -> TableSpec:
    return TableSpec(**{"name": "orders", "target": ORDERS, "source": ORDERS, **kw})


def test_full_refresh_creates_target_with_key_and_copies_every_row(dbs):
    _seed_orders(dbs)
    result = run_sync(dbs, _spec(mode=Mode.FULL_REFRESH))

    assert (result.rows_copied, result.inserted, result.target_rows) == (1000, 1000, 1000)
    assert result.created_target
    assert dbs.tgt("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                   "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'orders'::regclass "
                   "AND i.indisprimary") == [("id",)]
    assert dbs.tgt("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass "
                   "AND attname = 'status'") == [(True,)]
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")
    assert compare(dbs, _spec()).checksums_match


@pytest.mark.parametrize(("differential", "counts"), [("never", (900, 0, 1000, 900)), ("always", (0, 1, 100, 900))])
def test_full_refresh_replaces_rows_and_reports_deleted(dbs, differential, counts):
    _seed_orders(dbs)
    run_sync(dbs, _spec())
    dbs.src("DELETE FROM orders WHERE id > 900; UPDATE orders SET note = 'changed' WHERE id = 1")

    result = run_sync(dbs, _spec(differential=differential))

    assert (result.inserted, result.updated, result.deleted, result.target_rows) == counts
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")


@pytest.mark.parametrize(("differential", "copied"), [("never", 1002), ("auto", 5)])
def test_merge_rewrites_only_changed_rows(dbs, differential, copied):
    _seed_orders(dbs)
    run_sync(dbs, _spec(mode=Mode.MERGE))
    untouched_before = dbs.tgt("SELECT xmin::text, ctid::text FROM orders WHERE id = 500")
    dbs.src("""UPDATE orders SET note = 'changed' WHERE id IN (1, 2, 3);
               INSERT INTO orders VALUES (1001, 'new', 1.00, 'a'), (1002, 'new', 2.00, 'b')""")

    result = run_sync(dbs, _spec(mode=Mode.MERGE, differential=differential))

    assert (result.rows_copied, result.inserted, result.updated, result.deleted) == (copied, 2, 3, 0)
    assert dbs.tgt("SELECT xmin::text, ctid::text FROM orders WHERE id = 500") == untouched_before
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")


def test_merge_rerun_changes_nothing(dbs):
    _seed_orders(dbs)
    run_sync(dbs, _spec(mode=Mode.MERGE))
    before = dbs.tgt("SELECT count(*), max(xmin::text::bigint) FROM orders")

    result = run_sync(dbs, _spec(mode=Mode.MERGE))

    assert (result.inserted, result.updated, result.deleted) == (0, 0, 0)
    assert dbs.tgt("SELECT count(*), max(xmin::text::bigint) FROM orders") == before


def test_full_refresh_rerun_leaves_equal_table(dbs):
    _seed_orders(dbs)
    run_sync(dbs, _spec())
    first = table_text(dbs.target, ORDERS, "id")
    run_sync(dbs, _spec())
    assert table_text(dbs.target, ORDERS, "id") == first
    assert compare(dbs, _spec()).checksums_match


def test_where_scopes_the_copy_and_the_checks(dbs):
    _seed_orders(dbs)
    spec = _spec(mode=Mode.MERGE, where="status = 'paid'")

    result = run_sync(dbs, spec)

    assert result.rows_copied == 333
    assert dbs.tgt("SELECT count(*), count(*) FILTER (WHERE status <> 'paid') FROM orders") == [(333, 0)]
    comparison = compare(dbs, spec)
    assert comparison.source.rows == comparison.target.rows == 333
    assert comparison.checksums_match


def test_query_source_is_copied_by_its_key(dbs):
    _seed_orders(dbs)
    target = TableRef("reports", "revenue by status")
    spec = TableSpec(name="revenue", target=target, mode=Mode.MERGE, primary_key=("status",),
                     query="SELECT status, count(*) AS orders, sum(total) AS revenue "
                           "FROM orders GROUP BY status")

    first = run_sync(dbs, spec)
    dbs.src("UPDATE orders SET total = total + 1 WHERE id = 3")
    second = run_sync(dbs, spec)

    assert (first.inserted, second.updated, second.inserted) == (2, 1, 0)
    assert dbs.tgt('SELECT status, orders FROM reports."revenue by status" ORDER BY 1') == [
        ("new", 667), ("paid", 333)]
    assert compare(dbs, spec).checksums_match


def test_delete_missing_removes_rows_gone_from_the_scope_only(dbs):
    _seed_orders(dbs)
    spec = _spec(mode=Mode.MERGE, where="id <= 500", delete_missing=True)
    run_sync(dbs, spec)
    dbs.tgt("INSERT INTO orders VALUES (5000, 'new', 1, 'outside the scope')")
    dbs.src("DELETE FROM orders WHERE id IN (10, 20, 30)")

    result = run_sync(dbs, spec)

    assert result.deleted == 3
    assert dbs.tgt("SELECT count(*) FROM orders WHERE id IN (10, 20, 30)") == [(0,)]
    assert dbs.tgt("SELECT note FROM orders WHERE id = 5000") == [("outside the scope",)]
    assert compare(dbs, spec).checksums_match


def test_full_refresh_keeps_grants_and_views_on_the_target(dbs):
    _seed_orders(dbs)
    run_sync(dbs, _spec())
    dbs.tgt("CREATE ROLE reader_ro; GRANT SELECT ON orders TO reader_ro; "
            "CREATE VIEW paid AS SELECT id FROM orders WHERE status = 'paid'")
    try:
        dbs.src("UPDATE orders SET status = 'paid' WHERE id = 1")
        run_sync(dbs, _spec())
        assert dbs.tgt("SELECT count(*) FROM paid") == [(334,)]
        assert dbs.tgt("SELECT has_table_privilege('reader_ro', 'orders', 'SELECT')") == [(True,)]
    finally:
        dbs.tgt("DROP VIEW paid; REVOKE ALL ON orders FROM reader_ro; DROP ROLE reader_ro")


def test_duplicate_keys_in_a_query_source_fail_clearly_and_change_nothing(dbs):
    _seed_orders(dbs, rows=10)
    spec = TableSpec(name="by_status", target=TableRef("public", "by_status"), mode=Mode.MERGE,
                     primary_key=("status",), query="SELECT status, id FROM orders")
    with pytest.raises(SyncError) as caught:
        run_sync(dbs, spec)
    message = str(caught.value)
    # a first load finds them when it builds the key; a merge into an existing table, before it
    assert "index failed for `public.by_status`" in message
    assert "several rows for one key (status)" in message and "(new)" in message
    assert dbs.tgt("SELECT to_regclass('public.by_status')") == [(None,)]


INDEX_DEFS = ("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisclustered "
              "FROM pg_index WHERE indrelid = 'orders'::regclass ORDER BY 1")
CONSTRAINT_DEFS = ("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE conrelid = 'orders'::regclass ORDER BY 1")


@pytest.mark.parametrize("clustered", [False, True])
def test_full_refresh_keeps_every_index_and_constraint(dbs, clustered):
    _seed_orders(dbs)
    run_sync(dbs, _spec())
    dbs.tgt("""CREATE INDEX paid_only ON orders (status) WHERE status = 'paid';
               ALTER TABLE orders ADD CONSTRAINT orders_note_key UNIQUE (note);
               CREATE INDEX "Lower Note" ON orders (lower(note));""")
    if clustered:
        dbs.tgt('CLUSTER orders USING "Lower Note"')
    indexes, constraints = dbs.tgt(INDEX_DEFS), dbs.tgt(CONSTRAINT_DEFS)
    dbs.src("UPDATE orders SET note = 'changed' WHERE id = 1")

    result = run_sync(dbs, _spec(differential="never"))  # the full copy, which rebuilds indexes

    assert result.inserted == 1000
    assert dbs.tgt(INDEX_DEFS) == indexes and len(indexes) == 4
    assert dbs.tgt(CONSTRAINT_DEFS) == constraints
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")


def test_a_long_copy_logs_progress_with_rows_and_rate(dbs, caplog):
    dbs.src("CREATE TABLE wide AS SELECT i AS id, repeat('x', 200) AS pad "
            "FROM generate_series(1, 50000) AS i")
    spec = TableSpec(name="wide", target=TableRef("public", "wide"), source=TableRef("public", "wide"))
    caplog.set_level(logging.INFO, logger="pg_sync_assets")

    run_sync(dbs, spec, SyncOptions(progress_interval=0.0))

    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("copy `public.wide`: ")]
    assert len(progress) >= 2
    assert "rows/s" in progress[-1] and " rows" in progress[-1]
    counts = [int(m.split(": ")[1].split(" ")[0].replace(",", "")) for m in progress]
    assert counts == sorted(counts) and 0 < counts[-1] <= 50000


def test_where_and_query_with_trailing_semicolon_and_comment_sync_as_written(dbs):
    _seed_orders(dbs, rows=30)
    scoped = _spec(name="paid", target=TableRef("public", "paid"),
                   where="status = 'paid'; -- only the paid ones")
    query = TableSpec(name="totals", target=TableRef("public", "totals"), primary_key=("status",),
                      mode=Mode.MERGE, query="SELECT status, sum(total) AS total FROM orders\n"
                                             "GROUP BY status; -- one row per status\n")
    assert run_sync(dbs, scoped).rows_copied == 10
    assert run_sync(dbs, query).rows_copied == 2
    assert compare(dbs, scoped).checksums_match and compare(dbs, query).checksums_match


def _merge_plan(dbs, key_lookup: dict[str, str], monkeypatch) -> tuple[str, list[str], tuple]:
    """merge_from_staging of 5,000 changed rows into a 50,000-row `orders` with its
    primary key, with `KEY_LOOKUP_JOIN` as given: (the MERGE's plan as auto_explain
    logged it, the join settings after it, the counts)."""
    import psycopg2

    from pg_sync_assets.engine.load import merge
    from pg_sync_assets.engine.plan.plan import plan_table
    from pg_sync_assets.engine.plan.target import read_target_shape

    monkeypatch.setattr(merge, "KEY_LOOKUP_JOIN", key_lookup)
    conn = psycopg2.connect(dbs.target)
    try:
        with conn.cursor() as cur:
            with psycopg2.connect(dbs.source) as src, src.cursor() as scur:
                plan = plan_table(scur, _spec(mode=Mode.MERGE))
            cur.execute("CREATE SCHEMA IF NOT EXISTS sync_staging; "
                        "CREATE UNLOGGED TABLE sync_staging.stg_plan (LIKE public.orders); "
                        "INSERT INTO sync_staging.stg_plan SELECT id, status, total, note || 'x' FROM orders "
                        "WHERE mod(id, 10) = 0; ANALYZE sync_staging.stg_plan; ANALYZE orders")
            cur.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                        "SET auto_explain.log_level = notice; SET client_min_messages = notice")
            del conn.notices[:]
            counts = merge.merge_from_staging(cur, ORDERS, "stg_plan", plan.columns, plan.key_columns(), 5000,
                                              read_target_shape(cur, ORDERS))
            merge_plans = [n for n in conn.notices if "MERGE INTO" in n]
            cur.execute("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')")
            after = list(cur.fetchone())
    finally:
        conn.rollback()
        conn.close()
    assert len(merge_plans) == 1, conn.notices
    return merge_plans[0], after, (counts.inserted, counts.updated)


def test_a_merge_looks_staged_keys_up_in_the_targets_unique_index(dbs, monkeypatch):
    from pg_sync_assets.engine.load.merge import KEY_LOOKUP_JOIN

    _seed_orders(dbs, 50_000)
    run_sync(dbs, _spec(mode=Mode.MERGE))
    plan, after, counts = _merge_plan(dbs, dict(KEY_LOOKUP_JOIN), monkeypatch)
    assert "Nested Loop" in plan and "Index Scan using orders_pkey on orders t" in plan, plan
    assert "Hash" not in plan, plan
    assert after == ["on", "on"]  # the rest of the transaction plans as configured
    assert counts == (0, 5000)
    # Without the settings, the planner's default costs hash the whole target instead.
    plan, _, counts = _merge_plan(dbs, {}, monkeypatch)
    assert "Hash Right Join" in plan and "Seq Scan on orders t" in plan, plan
    assert counts == (0, 5000)


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_a_first_load_copies_straight_into_the_new_table_and_builds_its_key_once(dbs, mode):
    """No staging write for a table that does not exist yet: created, filled by COPY,
    keyed and verified in one transaction."""
    _seed_orders(dbs)
    result = run_sync(dbs, _spec(mode=mode, where="status = 'paid'"))
    assert (result.method, result.created_target, result.inserted) == ("first_load", True, 333)
    assert "merge" not in result.stage_seconds and {"copy", "index", "verify_final"} <= set(result.stage_seconds)
    assert result.verification.final.rows == 333
    assert table_text(dbs.source, ORDERS, "id", "status = 'paid'") == table_text(dbs.target, ORDERS, "id")
    assert dbs.tgt("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'orders'::regclass "
                   "AND contype = 'p'") == [("PRIMARY KEY (id)",)]
    # written once, by COPY FREEZE into the table created in the same transaction: frozen
    dbs.tgt("CREATE EXTENSION IF NOT EXISTS pageinspect")
    frozen, rows = dbs.tgt("SELECT count(*) FILTER (WHERE t_infomask & 768 = 768), count(*) "
                           "FROM heap_page_items(get_raw_page('orders', 0))")[0]
    assert frozen == rows > 0
    again = run_sync(dbs, _spec(mode=mode, where="status = 'paid'"))
    assert again.method != "first_load" and again.created_target is False


def test_a_first_load_that_fails_verification_leaves_no_table(dbs):
    _seed_orders(dbs, rows=50)
    # A target-side rule that rewrites rows, installed for any new table named orders: an
    # event trigger adds it when the run creates the table.
    dbs.tgt("""
        CREATE FUNCTION add_rule() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.orders'
                     AND command_tag = 'CREATE TABLE') THEN
            CREATE TRIGGER tamper BEFORE INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION tamper();
          END IF;
        END $$;
        CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS
          $$BEGIN NEW.note = 'changed'; RETURN NEW; END$$;
        CREATE EVENT TRIGGER add_rule ON ddl_command_end EXECUTE FUNCTION add_rule();
    """)
    try:
        with pytest.raises(SyncError) as caught:
            run_sync(dbs, _spec())
    finally:
        dbs.tgt("DROP EVENT TRIGGER add_rule")
    assert "final table rows differ" in str(caught.value) and "`tamper`" in str(caught.value)
    assert str(caught.value).endswith("rolled back: the target table is unchanged")
    assert dbs.tgt("SELECT to_regclass('public.orders')") == [(None,)]
