"""A sync changes its own target table and nothing else, and puts back exactly what a
full refresh rebuilds; targets it cannot write safely are refused before any copy."""

from __future__ import annotations

import uuid
from dataclasses import replace

import psycopg2
import pytest

from pg_sync_assets.engine import Mode, SchemaMismatchError, SyncError, TableRef, TableSpec
from pg_sync_assets_tests.support import run_sync, staging_tables, table_text

ORDERS = TableRef("public", "orders")
SEED = """
CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, total numeric(10,2));
INSERT INTO orders SELECT i, CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'new' END, i * 1.25
FROM generate_series(1, 20) AS i;
"""


def _spec(**kw) -> TableSpec:
    return TableSpec(**{"name": "orders", "target": ORDERS, "source": ORDERS, **kw})


def _with_notes(dbs, action: str) -> None:
    """The target orders, and a target-only table that references them."""
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.tgt(f"CREATE TABLE order_notes (order_id bigint REFERENCES orders (id) ON DELETE {action}, "
            "note text); INSERT INTO order_notes SELECT id, 'note ' || id FROM orders")


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_a_referenced_table_is_refreshed_by_key_and_referencing_rows_stay(dbs, mode):
    _with_notes(dbs, "CASCADE")
    dbs.src("UPDATE orders SET total = 0 WHERE id = 4; INSERT INTO orders VALUES (21, 'new', 1)")

    result = run_sync(dbs, _spec(mode=mode, delete_missing=mode is Mode.MERGE))

    assert (result.inserted, result.updated, result.deleted) == (1, 1, 0)
    assert dbs.tgt("SELECT count(*) FROM order_notes") == [(20,)]
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")


def test_a_gone_row_nobody_references_is_deleted_by_the_keyed_refresh(dbs):
    _with_notes(dbs, "CASCADE")
    dbs.tgt("DELETE FROM order_notes WHERE order_id = 7")
    dbs.src("DELETE FROM orders WHERE id = 7")

    result = run_sync(dbs, _spec())

    assert result.deleted == 1 and dbs.tgt("SELECT count(*) FROM order_notes") == [(19,)]
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")


@pytest.mark.parametrize("action", ["CASCADE", "RESTRICT", "NO ACTION", "SET NULL"])
@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_deleting_a_still_referenced_row_is_refused_naming_the_referencing_table(dbs, action, mode):
    _with_notes(dbs, action)
    before = table_text(dbs.target, ORDERS, "id")
    dbs.src("DELETE FROM orders WHERE id IN (3, 5)")

    with pytest.raises(SyncError) as caught:
        run_sync(dbs, _spec(mode=mode, delete_missing=mode is Mode.MERGE))

    message = str(caught.value)
    assert message.startswith("merge failed for `public.orders`: 2 row(s) of `public.order_notes` (e.g. (3), (5)")
    assert f"through foreign key `order_notes_order_id_fkey` (ON DELETE {action})" in message
    assert "sync `public.order_notes` first (or remove those rows)" in message
    assert message.endswith("the target table is unchanged")
    assert table_text(dbs.target, ORDERS, "id") == before
    assert dbs.tgt("SELECT count(*), count(order_id) FROM order_notes") == [(20, 20)]
    assert staging_tables(dbs.target) == []


FINGERPRINT = """
SELECT 'index', ic.relname, pg_get_indexdef(i.indexrelid), COALESCE(ts.spcname, ''),
       obj_description(i.indexrelid, 'pg_class'), ic.reloptions::text,
       (SELECT array_agg(attstattarget ORDER BY attnum) FROM pg_attribute WHERE attrelid = ic.oid)::text
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid LEFT JOIN pg_tablespace ts ON ts.oid = ic.reltablespace
WHERE i.indrelid = 'public.orders'::regclass
UNION ALL
SELECT 'constraint', conname, pg_get_constraintdef(oid), condeferrable::text || condeferred::text,
       obj_description(oid, 'pg_constraint'), convalidated::text, NULL
FROM pg_constraint WHERE conrelid = 'public.orders'::regclass
ORDER BY 1, 2
"""


def _in_place_tablespace(url: str) -> str:
    name = f"ts_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET allow_in_place_tablespaces = on")
            cur.execute(f'CREATE TABLESPACE "{name}" LOCATION \'\'')  # test-only DDL, fixed name
    finally:
        conn.close()
    return name


def test_a_full_refresh_puts_back_tablespaces_comments_and_constraint_properties(dbs):
    dbs.src(SEED + "ALTER TABLE orders ADD COLUMN code text; UPDATE orders SET code = 'c' || id")
    run_sync(dbs, _spec(differential="never"))
    space = _in_place_tablespace(dbs.target)
    try:
        dbs.tgt(f"""
            ALTER INDEX orders_pkey SET TABLESPACE "{space}";
            COMMENT ON INDEX orders_pkey IS 'the key index';
            COMMENT ON CONSTRAINT orders_pkey ON orders IS 'one row per order';
            ALTER TABLE orders ADD CONSTRAINT code_unique UNIQUE (code) DEFERRABLE INITIALLY DEFERRED;
            COMMENT ON CONSTRAINT code_unique ON orders IS 'codes are unique';
            CREATE INDEX "상태 idx" ON orders (lower(status)) WITH (fillfactor = 70) TABLESPACE "{space}";
            COMMENT ON INDEX "상태 idx" IS '상태별';
            ALTER INDEX "상태 idx" ALTER COLUMN 1 SET STATISTICS 500;
        """)
        before = dbs.tgt(FINGERPRINT)
        oids = dbs.tgt("SELECT indexrelid FROM pg_index WHERE indrelid = 'orders'::regclass")
        dbs.src("UPDATE orders SET total = 1 WHERE id = 2")

        run_sync(dbs, _spec(differential="never"))

        assert dbs.tgt(FINGERPRINT) == before and len(before) == 5
        # the indexes really were dropped and built again, not left alone
        assert set(dbs.tgt("SELECT indexrelid FROM pg_index WHERE indrelid = 'orders'::regclass")).isdisjoint(oids)
        assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")
    finally:
        dbs.tgt("DROP TABLE orders")
        dbs.tgt(f'DROP TABLESPACE "{space}"')


def test_a_target_made_with_pg_dump_schema_only_is_refreshed_as_it_is(dbs):
    """Defaults, a trigger, a foreign key to a parent, range partitions: all kept."""
    dbs.src(SEED)
    dbs.tgt("""
        CREATE TABLE statuses (status text PRIMARY KEY); INSERT INTO statuses VALUES ('new'), ('paid');
        CREATE TABLE orders (id bigint NOT NULL, status text NOT NULL REFERENCES statuses,
                             total numeric(10,2), loaded_at timestamptz DEFAULT now(),
                             PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE orders_low PARTITION OF orders FOR VALUES FROM (MINVALUE) TO (11);
        CREATE TABLE orders_high PARTITION OF orders FOR VALUES FROM (11) TO (MAXVALUE);
        CREATE TABLE audit (n int); INSERT INTO audit VALUES (0);
        CREATE FUNCTION count_loads() RETURNS trigger LANGUAGE plpgsql AS
          $$BEGIN UPDATE audit SET n = n + 1; RETURN NULL; END$$;
        CREATE TRIGGER loads AFTER INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION count_loads();
    """)
    for _ in range(2):  # `loaded_at` is the target's own: named, so the sync leaves it to its default
        run_sync(dbs, _spec(differential="never", columns_exclude=("loaded_at",)))
        assert table_text(dbs.source, ORDERS, "id") == [
            r.rsplit(",", 1)[0] + ")" for r in table_text(dbs.target, ORDERS, "id")]
    assert dbs.tgt("SELECT count(*) FROM orders_low") == [(10,)]
    assert dbs.tgt("SELECT n FROM audit") == [(2,)]
    assert dbs.tgt("SELECT count(*) FROM orders WHERE loaded_at IS NULL") == [(0,)]


def test_a_partition_of_a_partitioned_table_is_a_valid_target(dbs):
    dbs.src(SEED)
    dbs.tgt("""CREATE TABLE all_orders (id bigint, status text NOT NULL, total numeric(10,2),
                                         PRIMARY KEY (id)) PARTITION BY RANGE (id);
               CREATE TABLE orders PARTITION OF all_orders FOR VALUES FROM (1) TO (1000);
               CREATE TABLE other PARTITION OF all_orders FOR VALUES FROM (1000) TO (2000);
               INSERT INTO other VALUES (1500, 'kept', 1)""")
    for _ in range(2):
        run_sync(dbs, _spec())
    assert table_text(dbs.source, ORDERS, "id") == table_text(dbs.target, ORDERS, "id")
    assert dbs.tgt("SELECT count(*) FROM other") == [(1,)]


@pytest.mark.parametrize(
    ("ddl", "problem"),
    [
        ("CREATE TABLE orders (id bigint PRIMARY KEY, status text, total numeric(10,2)); "
         "CREATE TABLE orders_2025 () INHERITS (orders); INSERT INTO orders_2025 VALUES (99, 'old', 1)",
         "it has inheritance children (`public.orders_2025`), which deleting or truncating it would change"),
        ("CREATE TABLE base (id bigint PRIMARY KEY, status text, total numeric(10,2)); "
         "CREATE VIEW orders AS SELECT * FROM base",
         "it is a view; `target` must name a table"),
    ],
)
def test_a_target_that_cannot_be_written_safely_is_refused_before_the_copy(dbs, ddl, problem):
    dbs.src(SEED)
    dbs.tgt(ddl)
    with pytest.raises(SchemaMismatchError) as caught:
        run_sync(dbs, _spec())
    message = str(caught.value)
    assert message.startswith("plan failed for `public.orders`: target table `public.orders` cannot be synced: ")
    assert problem in message and message.endswith("nothing was written")
    assert staging_tables(dbs.target) == []


def test_an_on_update_cascade_on_columns_outside_the_key_is_refused(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.tgt("ALTER TABLE orders ADD CONSTRAINT status_id UNIQUE (status, id); "
            "CREATE TABLE refs (status text, id bigint, FOREIGN KEY (status, id) REFERENCES orders (status, id) "
            "ON UPDATE CASCADE)")
    with pytest.raises(SchemaMismatchError) as caught:
        run_sync(dbs, _spec(mode=Mode.MERGE))
    assert "foreign key `refs_status_id_fkey` of `public.refs` references its column(s) ['status', 'id'] " \
           "ON UPDATE CASCADE" in str(caught.value)


def test_merge_refuses_duplicate_source_keys_even_without_a_unique_target_index(dbs):
    dbs.src("CREATE TABLE events (id int, v text); INSERT INTO events VALUES (1, 'a'), (1, 'b'), (2, 'c')")
    dbs.tgt("CREATE TABLE events (id int, v text)")  # no key in the target either
    spec = TableSpec(name="events", target=TableRef("public", "events"), source=TableRef("public", "events"),
                     mode=Mode.MERGE, primary_key=("id",))
    with pytest.raises(SyncError) as caught:
        run_sync(dbs, spec)
    assert "the source scope has several rows for one key (id), e.g. (1)" in str(caught.value)
    assert dbs.tgt("SELECT count(*) FROM events") == [(0,)]


def test_lock_settings_bound_the_wait_for_a_busy_reader(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec(differential="never"))
    reader = psycopg2.connect(dbs.target)
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
        with pytest.raises(SyncError) as caught:
            run_sync(dbs, _spec(lock_timeout=0.6, lock_attempt_timeout=0.1, differential="never"))
        # while it tried, other readers were never stuck behind it for long
        assert "tries of at most `lock_attempt_timeout` 0.1 s" in str(caught.value)
    finally:
        reader.close()
    assert run_sync(dbs, replace(_spec(differential="never"), lock_timeout=5)).rows_copied == 20
