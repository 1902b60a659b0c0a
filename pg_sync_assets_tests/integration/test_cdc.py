"""`mode: cdc`: a first copy from a slot's snapshot, then exactly the committed changes,
applied and verified in one target transaction, the slot advanced only after it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from psycopg2 import sql

from pg_sync_assets.engine import ConfigError, Mode, TableRef, TableSpec, connect
from pg_sync_assets.engine.cdc.feed import Feed
from pg_sync_assets.engine.run.cdc import APPLIED, SNAPSHOT_COPY, sync_cdc_table
from pg_sync_assets_tests.integration.test_types_and_names import TAMPER, ZOO, ZOO_DDL
from pg_sync_assets_tests.support import table_text, writing_meanwhile

FEED = Feed.default("source")
ORDERS = TableRef("public", "orders")


def _spec(table: TableRef = ORDERS, **kw) -> TableSpec:
    return TableSpec(name=table.name, target=table, source=table, mode=Mode.CDC, **kw)


def cdc(dbs, spec: TableSpec | None = None, positions=None):
    spec = spec or _spec()
    source, target = connect(dbs.source, readonly=True), connect(dbs.target, readonly=False)
    try:
        return sync_cdc_table(spec, source, target, feed=FEED, positions=positions)
    finally:
        source.close()
        target.close()


def same(dbs, table: TableRef = ORDERS, order: str = "id") -> bool:
    return table_text(dbs.source, table, order) == table_text(dbs.target, table, order)


def _orders(dbs, rows: int = 100) -> None:
    dbs.src(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2), note text);"
        f"INSERT INTO orders SELECT g, 'new', g * 1.5, 'n' || g FROM generate_series(1, {rows}) g"
    )


def test_first_run_copies_from_the_slot_snapshot_and_later_runs_apply_only_the_changes(dbs):
    _orders(dbs)
    first = cdc(dbs)
    assert first.method == SNAPSHOT_COPY and first.target_rows == 100 and same(dbs)
    status = dbs.src("SELECT slot_name, plugin FROM pg_replication_slots")
    assert status == [(FEED.slot, "pgoutput")]
    assert dbs.src("SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (FEED.publication,)) == [
        ("orders",)
    ]

    dbs.src(
        "INSERT INTO orders VALUES (101, 'new', 1, NULL), (102, 'new', 2, 'x');"
        "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id IN (1, 2, 3);"
        "DELETE FROM orders WHERE id IN (4, 5);"
        "UPDATE orders SET id = 1000 WHERE id = 6;"  # a key change
        "INSERT INTO orders VALUES (200, 'gone', 0, NULL); DELETE FROM orders WHERE id = 200;"
    )
    dbs.src("BEGIN; INSERT INTO orders VALUES (300, 'rolled back', 0, NULL); ROLLBACK")
    second = cdc(dbs)
    assert second.method == APPLIED
    assert (second.inserted, second.updated, second.deleted) == (3, 3, 3)  # 101, 102, 1000; 1-3; 4, 5, 6
    assert second.rows_copied == 10  # changes staged: 2 + 3 + 2 + 1 + 2 (the rollback sent none)
    assert second.target_rows == 100 + 2 - 2 == dbs.tgt("SELECT count(*) FROM orders")[0][0]
    assert same(dbs)
    assert "rows of the keys the changes touched" in second.verification.final_scope

    third = cdc(dbs)  # nothing changed: nothing applied, the position moves on
    assert third.rows_copied == 0 and (third.inserted, third.updated, third.deleted) == (0, 0, 0)
    assert third.cdc_position >= second.cdc_position
    # the slot was advanced to what the target holds
    confirmed = dbs.src("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0][0]
    assert confirmed == third.cdc_position


def test_every_type_of_the_zoo_survives_inserts_and_updates(dbs):
    dbs.src(ZOO_DDL)
    spec = _spec(ZOO)
    cdc(dbs, spec)
    assert same(dbs, ZOO)
    for column, expression in TAMPER.items():
        dbs.src(sql.SQL("UPDATE zoo SET {} = {} WHERE id = 1").format(sql.Identifier(column), sql.SQL(expression)))
    dbs.src("INSERT INTO zoo SELECT id + 10, jb, j, ints, texts, n, n2, f8, f4, ts, tsl, d, t, ttz, iv, b, u, m,"
            " moods, p, r, tr, nr, ip, net, mac, money_, flag, c3, vc, txt, pt, x FROM zoo")
    result = cdc(dbs, spec)
    assert result.method == APPLIED and (result.inserted, result.updated) == (3, 1)
    assert same(dbs, ZOO)


def test_unchanged_toasted_values_are_kept_through_updates_and_key_changes(dbs):
    # Values stored out of line that an UPDATE leaves alone are not in the change stream.
    dbs.src(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);"
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;"
        "INSERT INTO docs SELECT g, 't' || g, repeat(md5(g::text), 400) FROM generate_series(1, 5) g"
    )
    spec = _spec(TableRef("public", "docs"))
    cdc(dbs, spec)
    dbs.src(
        "UPDATE docs SET title = 'a' WHERE id = 1;"  # body left out, from the target
        "UPDATE docs SET title = 'b' WHERE id = 1;"  # and again
        "UPDATE docs SET body = repeat('z', 9000) WHERE id = 2; UPDATE docs SET title = 'c' WHERE id = 2;"
        "UPDATE docs SET id = 50 WHERE id = 3;"  # a key change leaving the body out
        "UPDATE docs SET title = 'd' WHERE id = 50;"
    )
    result = cdc(dbs, spec)
    assert result.method == APPLIED
    assert same(dbs, TableRef("public", "docs"))


def test_truncate_empties_the_target_and_later_changes_follow(dbs):
    _orders(dbs, 20)
    cdc(dbs)
    dbs.src("UPDATE orders SET note = 'before' WHERE id = 1; TRUNCATE orders;"
            "INSERT INTO orders VALUES (7, 'after', 1, NULL)")
    result = cdc(dbs)
    assert result.target_rows == 1 and "TRUNCATE" in result.verification.final_scope
    assert same(dbs)


def test_a_run_killed_after_its_commit_and_before_the_slot_moves_applies_nothing_twice(dbs, tmp_path):
    _orders(dbs, 10)
    cdc(dbs)
    dbs.src("UPDATE orders SET amount = amount + 1 WHERE id <= 5; INSERT INTO orders VALUES (11, 'new', 1, NULL)")
    before = dbs.src("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0][0]
    # The run's process dies right after the target's commit (the slot advance never runs).
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pg_sync_assets.engine import Mode, TableRef, TableSpec, connect
        from pg_sync_assets.engine.cdc import feed as feed_module
        from pg_sync_assets.engine.run import cdc
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        cdc.advance = die
        t = TableRef("public", "orders")
        spec = TableSpec(name="orders", target=t, source=t, mode=Mode.CDC)
        cdc.sync_cdc_table(spec, connect({dbs.source!r}, readonly=True), connect({dbs.target!r}, readonly=False),
                           feed=feed_module.Feed.default("source"))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert dbs.src("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0][0] == before
    assert same(dbs)  # the changes were committed once
    dbs.src("UPDATE orders SET amount = amount * 10 WHERE id = 11")
    again = cdc(dbs)  # reads the same changes again, skips those the target holds
    assert (again.inserted, again.updated, again.deleted) == (0, 1, 0)
    assert same(dbs)


def test_a_concurrent_writer_during_runs_loses_nothing(dbs):
    _orders(dbs, 1000)
    cdc(dbs)
    with writing_meanwhile(
        dbs.src,
        "UPDATE orders SET amount = amount + 1, note = %s WHERE id = %s",
        lambda n: (f"w{n}", n % 1000 + 1),
    ):
        for _ in range(3):
            cdc(dbs)
    cdc(dbs)  # after the writer stopped: every committed change is in
    assert same(dbs)


def test_a_column_added_under_add_columns_copies_the_table_again(dbs):
    _orders(dbs, 10)
    spec = _spec(on_schema_change="add_columns")
    cdc(dbs, spec)
    dbs.src("UPDATE orders SET note = 'x' WHERE id = 1; ALTER TABLE orders ADD COLUMN region text DEFAULT 'kr';"
            "UPDATE orders SET region = 'jp' WHERE id = 2")
    result = cdc(dbs, spec)
    assert result.method == SNAPSHOT_COPY and "added column `region`" in " ".join(result.schema_changes)
    assert same(dbs)
    dbs.src("UPDATE orders SET region = 'us' WHERE id = 3")
    assert cdc(dbs, spec).method == APPLIED and same(dbs)


def test_a_column_added_under_fail_stops_the_run_and_writes_nothing(dbs):
    _orders(dbs, 10)
    cdc(dbs)
    dbs.src("ALTER TABLE orders ADD COLUMN region text")
    with pytest.raises(Exception, match="region"):
        cdc(dbs)
    assert dbs.tgt("SELECT count(*) FROM information_schema.columns WHERE column_name = 'region'") == [(0,)]


@pytest.mark.parametrize(
    "ddl, problem",
    [
        ("CREATE TABLE t (id int, v text)", "has no key"),
        ("CREATE TABLE t (id int NOT NULL, v text); CREATE UNIQUE INDEX t_id ON t (id)", "sends its primary key"),
        ("CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY NOTHING", "NOTHING"),
    ],
)
def test_a_table_without_a_usable_identity_is_refused_naming_the_fix(dbs, ddl, problem):
    dbs.src(ddl)
    table = TableRef("public", "t")
    key = ("id",) if "UNIQUE" in ddl else ()
    with pytest.raises(ConfigError, match=problem) as error:
        cdc(dbs, _spec(table, primary_key=key))
    assert "REPLICA IDENTITY" in str(error.value) or "primary key" in str(error.value)
    assert dbs.src("SELECT count(*) FROM pg_replication_slots") == [(0,)]  # nothing created


def test_replica_identity_full_is_enough_with_a_declared_key(dbs):
    dbs.src("CREATE TABLE t (id int NOT NULL, v text); CREATE UNIQUE INDEX t_id ON t (id);"
            "ALTER TABLE t REPLICA IDENTITY FULL; INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    spec = _spec(TableRef("public", "t"), primary_key=("id",))
    cdc(dbs, spec)
    dbs.src("UPDATE t SET v = 'c' WHERE id = 1; DELETE FROM t WHERE id = 2")
    assert cdc(dbs, spec).method == APPLIED and same(dbs, TableRef("public", "t"))


def test_the_slot_stays_at_the_lowest_position_of_its_tables(dbs):
    _orders(dbs, 10)
    dbs.src("CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')")
    items = _spec(TableRef("public", "items"))
    cdc(dbs)
    first_items = cdc(dbs, items)
    dbs.src("UPDATE orders SET note = 'later' WHERE id = 1")

    def positions():  # items has applied nothing since its copy
        from pg_sync_assets.engine.cdc.pgoutput import lsn_int

        return {ORDERS: 0, items.target: lsn_int(first_items.cdc_position)}

    cdc(dbs, positions=positions)
    confirmed = dbs.src("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0][0]
    assert confirmed == first_items.cdc_position or confirmed < first_items.cdc_position
    dbs.src("UPDATE items SET v = 'b'")
    assert cdc(dbs, items).updated == 1 and same(dbs, TableRef("public", "items"))
    assert same(dbs)


def test_a_snapshot_group_of_cdc_tables_applies_one_moment_in_one_transaction(dbs):
    from pg_sync_assets.engine.run.cdc import sync_cdc_group

    dbs.src(
        "CREATE TABLE customers (id int PRIMARY KEY, name text);"
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total int);"
        "INSERT INTO customers VALUES (1, 'kim'), (2, 'lee');"
        "INSERT INTO orders VALUES (10, 1, 5), (11, 2, 7);"
    )
    dbs.tgt(  # the target keeps the foreign key: the writes must come in its order
        "CREATE TABLE customers (id int PRIMARY KEY, name text);"
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total int)"
    )
    specs = [_spec(ORDERS, snapshot_group="shop"), _spec(TableRef("public", "customers"), snapshot_group="shop")]

    def run():
        source, target = connect(dbs.source, readonly=True), connect(dbs.target, readonly=False)
        try:
            return sync_cdc_group(specs, source, target, feed=FEED)
        finally:
            source.close()
            target.close()

    first = run()
    assert [r.method for r in first] == [SNAPSHOT_COPY] * 2 and first[0].cdc_position == first[1].cdc_position
    # a new customer with an order, and a customer deleted with its order: parents first, children first
    dbs.src("INSERT INTO customers VALUES (3, 'park'); INSERT INTO orders VALUES (12, 3, 9);"
            "DELETE FROM orders WHERE customer_id = 2; DELETE FROM customers WHERE id = 2")
    orders, customers = run()
    assert (orders.method, customers.method) == (APPLIED, APPLIED)
    assert orders.cdc_position == customers.cdc_position  # one bound: one moment of the source
    assert (orders.inserted, orders.deleted, customers.inserted, customers.deleted) == (1, 1, 1, 1)
    assert same(dbs) and same(dbs, TableRef("public", "customers"))
