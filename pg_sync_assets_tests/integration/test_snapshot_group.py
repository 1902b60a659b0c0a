"""Snapshot groups: related tables read in one source snapshot, written in one target
transaction in foreign-key order, verified before that one commit; a failure leaves
every table of the group as it was."""

from __future__ import annotations

from dataclasses import replace

import pytest
from dagster import AssetKey, DagsterInstance

from pg_sync_assets import build_defs
from pg_sync_assets.config import parse_config
from pg_sync_assets.engine import ConfigError, Mode, SyncError, TableRef, TableSpec, VerificationError
from pg_sync_assets.engine.load.merge import DIFFERENTIAL
from pg_sync_assets.engine.run.group import parents_first, sync_group
from pg_sync_assets_tests.support import compare, run_sync, sessions, table_text, writing_meanwhile

SHOP_DDL = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES shop.customers ON DELETE CASCADE,
                          total numeric(10,2));
CREATE TABLE shop.items (order_id int REFERENCES shop.orders ON DELETE CASCADE, line int, sku text,
                         PRIMARY KEY (order_id, line));
"""
SHOP = SHOP_DDL + """
INSERT INTO shop.customers SELECT i, '고객 ' || i FROM generate_series(1, 20) AS i;
INSERT INTO shop.orders SELECT i, 1 + i % 20, i * 1.5 FROM generate_series(1, 100) AS i;
INSERT INTO shop.items SELECT o, l, 'sku-' || o || '-' || l FROM generate_series(1, 100) AS o, generate_series(1, 3) AS l;
"""

# The target made beforehand, the way `pg_dump -s` makes it: with the foreign keys, RESTRICT.
TARGET_SCHEMA = SHOP_DDL.replace("ON DELETE CASCADE", "ON DELETE RESTRICT")

NAMES = ("customers", "orders", "items")


def _specs(mode: Mode = Mode.FULL_REFRESH) -> list[TableSpec]:
    # children first on purpose: the group orders the writes itself
    return [TableSpec(name=n, source=TableRef("shop", n), target=TableRef("shop", n), mode=mode,
                      snapshot_group="shop", delete_missing=mode is Mode.MERGE) for n in reversed(NAMES)]


def _group(dbs, specs):
    with sessions(dbs) as (source, target):
        return sync_group(specs, source, target)


def _rows(url) -> list[list[str]]:
    return [sorted(table_text(url, TableRef("shop", n), "id" if n != "items" else "order_id")) for n in NAMES]


CHANGE = """
INSERT INTO shop.customers VALUES (21, '새 고객');
INSERT INTO shop.orders VALUES (101, 21, 9.99);
INSERT INTO shop.items VALUES (101, 1, 'new');
DELETE FROM shop.customers WHERE id = 5;   -- cascades to its orders and their items
"""


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_a_group_writes_parents_before_children_and_deletes_children_first(dbs, mode):
    dbs.src(SHOP)
    dbs.tgt(TARGET_SCHEMA)
    first = _group(dbs, _specs(mode))
    assert [r.target_rows for r in first] == [300, 100, 20]
    dbs.src(CHANGE)

    # table by table, the child lands before its parent (or the parent goes first): refused
    with pytest.raises(SyncError):
        run_sync(dbs, _specs(mode)[0])
    results = _group(dbs, _specs(mode))

    assert _rows(dbs.target) == _rows(dbs.source)
    assert all(r.verification.final == r.verification.source for r in results)
    assert [r.table for r in results] == ["shop.items", "shop.orders", "shop.customers"]
    assert results[2].inserted == 1 and results[2].deleted == 1


def test_a_member_without_verification_is_synced_unverified_beside_verified_ones(dbs):
    dbs.src(SHOP)
    dbs.tgt(TARGET_SCHEMA)
    specs = _specs()
    specs[0] = replace(specs[0], verify=False)  # shop.items
    dbs.src(CHANGE)

    results = _group(dbs, specs)

    assert results[0].verification is None
    assert all(r.verification.final == r.verification.source for r in results[1:])
    assert _rows(dbs.target) == _rows(dbs.source)


def test_a_writer_on_the_source_during_the_run_causes_no_violation_and_no_difference(dbs):
    dbs.src(SHOP)
    dbs.tgt(TARGET_SCHEMA)
    _group(dbs, _specs())
    with writing_meanwhile(
        dbs.src,
        "INSERT INTO shop.customers VALUES (%s, 'c'); INSERT INTO shop.orders VALUES (%s, %s, 1); "
        "INSERT INTO shop.items VALUES (%s, 1, 'x'); DELETE FROM shop.customers WHERE id = %s",
        lambda n: (n, n, n, n, n - 500),
        start=1000,
    ) as writer:
        results = [_group(dbs, _specs(mode)) for mode in (Mode.FULL_REFRESH, Mode.MERGE, Mode.FULL_REFRESH)]
    assert writer.count > 10, "the writer did not overlap the runs"
    assert all(r.verification.final == r.verification.source for rs in results for r in rs)
    # every committed state of the target satisfied its foreign keys (they are enforced),
    # and a last run on the quiet source leaves all three equal
    _group(dbs, _specs())
    assert all(compare(dbs, s).checksums_match for s in _specs())


BIG_SHOP = SHOP_DDL + """
INSERT INTO shop.customers SELECT i, '고객 ' || i FROM generate_series(1, 200) AS i;
INSERT INTO shop.orders SELECT i, 1 + i % 200, i * 1.5 FROM generate_series(1, 2000) AS i;
INSERT INTO shop.items SELECT o, l, 'sku-' || o || '-' || l FROM generate_series(1, 2000) AS o, generate_series(1, 3) AS l;
"""

# Customer 5 leaves with its 10 orders and their 30 items (the target's keys RESTRICT:
# the deletes must go children first); a new customer arrives with an order and an item
# (the inserts must go parents first); one order and one item change.
SMALL_CHANGE = """
INSERT INTO shop.customers VALUES (201, '새 고객');
INSERT INTO shop.orders VALUES (2001, 201, 9.99);
INSERT INTO shop.items VALUES (2001, 1, 'new');
DELETE FROM shop.customers WHERE id = 5;
UPDATE shop.orders SET total = 0 WHERE id = 7;
UPDATE shop.items SET sku = '바뀐 sku' WHERE order_id = 8 AND line = 2;
"""


def _counts(r):
    return r.rows_copied, r.inserted, r.updated, r.deleted


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_a_group_copies_and_writes_only_the_rows_that_differ_in_each_table(dbs, mode):
    dbs.src(BIG_SHOP)
    dbs.tgt(TARGET_SCHEMA)
    first = _group(dbs, _specs(mode))
    assert [r.method for r in first] != [DIFFERENTIAL] * 3 and [r.differential for r in first] == [None] * 3
    dbs.src(SMALL_CHANGE)

    results = _group(dbs, _specs(mode))

    assert _rows(dbs.target) == _rows(dbs.source)
    assert [r.method for r in results] == [DIFFERENTIAL] * 3
    assert not any(r.differential.fell_back for r in results)
    # items, orders, customers: only the new and changed rows copied, the gone ones deleted
    assert [_counts(r) for r in results] == [(2, 1, 1, 30), (2, 1, 1, 10), (1, 1, 0, 1)]
    assert all(r.verification.final == r.verification.source for r in results)
    assert [r.target_rows for r in results] == [5971, 1991, 200]
    # one transaction wrote the three tables, and in them only the new and changed rows
    written = "SELECT count(*) FROM shop.{} WHERE xmin = (SELECT xmin FROM shop.customers WHERE id = 201)"
    assert [dbs.tgt(written.format(n))[0][0] for n in NAMES] == [1, 2, 2]


def test_a_group_mixes_unchanged_differential_and_fallen_back_members(dbs):
    dbs.src(BIG_SHOP)
    dbs.tgt(TARGET_SCHEMA)
    _group(dbs, _specs())
    dbs.src("UPDATE shop.customers SET name = name || '!'; UPDATE shop.orders SET total = 1 WHERE id = 3")

    items, orders, customers = _group(dbs, _specs())

    assert _rows(dbs.target) == _rows(dbs.source)
    assert items.method == DIFFERENTIAL and _counts(items) == (0, 0, 0, 0)
    assert items.differential.buckets_differing == 0
    # the record the group's full copy wrote spared the target's checksum pass
    assert items.differential.target_recorded_at is not None
    assert orders.method == DIFFERENTIAL and _counts(orders) == (1, 0, 1, 0)
    assert customers.differential.fell_back and customers.method != DIFFERENTIAL
    assert customers.rows_copied == 200
    assert all(r.verification.final == r.verification.source for r in (items, orders, customers))


def test_a_member_can_be_kept_on_the_full_copy(dbs):
    dbs.src(BIG_SHOP)
    dbs.tgt(TARGET_SCHEMA)
    specs = [replace(s, differential="never") if s.name == "orders" else s for s in _specs()]
    _group(dbs, specs)
    dbs.src(SMALL_CHANGE)

    items, orders, customers = _group(dbs, specs)

    assert _rows(dbs.target) == _rows(dbs.source)
    assert orders.differential is None and orders.rows_copied == 1991
    assert items.method == customers.method == DIFFERENTIAL


@pytest.mark.parametrize("differential", ["never", "auto"])  # the full copy, and the changed rows only
def test_a_failure_in_one_table_leaves_every_table_of_the_group_as_it_was(dbs, differential):
    dbs.src(BIG_SHOP)
    dbs.tgt(TARGET_SCHEMA)
    specs = [replace(s, differential=differential) for s in _specs()]
    _group(dbs, specs)
    before = _rows(dbs.target)
    dbs.src(SMALL_CHANGE)
    dbs.tgt("CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN NEW.sku := NEW.sku || '!'; RETURN NEW; END $$; "
            "CREATE TRIGGER corrupt BEFORE INSERT OR UPDATE ON shop.items FOR EACH ROW EXECUTE FUNCTION corrupt()")

    with pytest.raises(VerificationError, match="`shop.items`") as caught:
        _group(dbs, specs)

    assert "final table rows differ" in str(caught.value)  # the staged rows were right
    assert _rows(dbs.target) == before


def test_foreign_keys_order_the_writes_and_a_cycle_keeps_the_given_order():
    a, b, c = (TableSpec(name=n, source=TableRef("s", n), target=TableRef("s", n)) for n in "abc")
    edges = [(("s", "c"), ("s", "b")), (("s", "b"), ("s", "a")), (("s", "x"), ("s", "a"))]
    assert [s.name for s in parents_first([c, b, a], edges)] == ["a", "b", "c"]
    cycle = [(("s", "a"), ("s", "b")), (("s", "b"), ("s", "a"))]
    assert [s.name for s in parents_first([b, a, c], cycle)] == ["c", "b", "a"]


CONFIG = {
    "tables": [
        {"source": f"shop.{n}", "mode": "full_refresh", "snapshot_group": "shop"} for n in NAMES
    ] + [{"name": "customer_copy", "source": "shop.customers", "target": "copies.customers"}],
}


def test_a_group_is_one_step_that_can_still_run_one_member(dbs, monkeypatch):
    dbs.src(SHOP)
    dbs.tgt(TARGET_SCHEMA)
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", dbs.source)
    monkeypatch.setenv("PG_SYNC_TARGET_URL", dbs.target)
    defs = build_defs(CONFIG)
    instance = DagsterInstance.ephemeral()

    result = defs.resolve_job_def("sync_all").execute_in_process(instance=instance)

    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert steps == {"snapshot_group_shop", "customer_copy"}
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 8 and all(c.passed for c in checks)
    assert _rows(dbs.target) == _rows(dbs.source)

    dbs.src("UPDATE shop.orders SET total = 0 WHERE id = 1")
    one = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[AssetKey("orders")])
    assert one.success
    assert [m.asset_key for m in one.asset_materializations_for_node("snapshot_group_shop")] == [
        AssetKey("orders")]
    assert dbs.tgt("SELECT total FROM shop.orders WHERE id = 1") == [(0,)]

    # every job resolves (the UI loads them all), and reconcile_all repairs the group's tables
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"sync_all", "reconcile_all", "verify_all"}
    dbs.tgt("UPDATE shop.items SET sku = 'wrong' WHERE order_id = 2")
    repaired = defs.resolve_job_def("reconcile_all").execute_in_process(instance=instance)
    assert repaired.success
    assert _rows(dbs.target) == _rows(dbs.source)


@pytest.mark.parametrize(("extra", "message"), [
    ({"mode": "incremental", "incremental_column": "id"}, "`snapshot_group` applies to `full_refresh`, `merge` and `cdc`"),
    ({"schedule": "0 1 * * *"}, "runs with its group (in `sync_all` and `sync_daily`); remove its `schedule`"),
    ({"snapshot_group": "shop-1"}, "`snapshot_group` names a step: use only letters"),
])
def test_bad_group_settings_fail_at_load(extra, message):
    entry = {"source": "shop.orders", "snapshot_group": "shop", **extra}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("`", "`")):
        parse_config({"tables": [entry]})


def test_a_group_cannot_span_two_connections():
    document = {
        "connections": {"other": {"url": {"env": "OTHER_URL"}}},
        "tables": [{"source": "shop.orders", "snapshot_group": "shop"},
                   {"source": "shop.items", "snapshot_group": "shop", "source_connection": "other"}],
    }
    with pytest.raises(ConfigError, match="snapshot group `shop` holds `orders` .* and `items`"):
        parse_config(document)


PARTITIONED = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop.payments (id int, paid_on date, customer_id int NOT NULL, amount numeric(8,2),
                            PRIMARY KEY (id, paid_on)) PARTITION BY RANGE (paid_on);
CREATE TABLE shop.payments_2026_10 PARTITION OF shop.payments FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE shop.payments_2026_11 PARTITION OF shop.payments FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
"""
# As `pg_dump -s` of pagila writes them: each partition declares its own foreign key.
ON_PARTITIONS = """
ALTER TABLE ONLY shop.payments_2026_10 ADD CONSTRAINT p10_customer FOREIGN KEY (customer_id)
    REFERENCES shop.customers (id) ON DELETE RESTRICT;
ALTER TABLE ONLY shop.payments_2026_11 ADD CONSTRAINT p11_customer FOREIGN KEY (customer_id)
    REFERENCES shop.customers (id) ON DELETE RESTRICT;
"""


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_foreign_keys_declared_on_partitions_order_their_partitioned_table(dbs, mode):
    dbs.src(PARTITIONED + """
        INSERT INTO shop.customers SELECT i, 'c' || i FROM generate_series(1, 30) i;
        INSERT INTO shop.payments SELECT i, date '2026-10-01' + i % 60, 1 + i % 30, i FROM generate_series(1, 200) i;
    """)
    dbs.tgt(PARTITIONED + ON_PARTITIONS)
    specs = [TableSpec(name=n, source=TableRef("shop", n), target=TableRef("shop", n), mode=mode,
                       snapshot_group="shop", delete_missing=mode is Mode.MERGE)
             for n in ("payments", "customers")]  # the child first on purpose
    _group(dbs, specs)
    dbs.src("INSERT INTO shop.customers VALUES (31, 'new'); "
            "INSERT INTO shop.payments VALUES (201, '2026-11-05', 31, 5); "
            "DELETE FROM shop.payments WHERE customer_id = 7; DELETE FROM shop.customers WHERE id = 7")
    for _ in range(2):  # the change, then nothing to change
        _group(dbs, specs)
    for n, key in (("customers", "id"), ("payments", "id")):
        assert table_text(dbs.target, TableRef("shop", n), key) == table_text(dbs.source, TableRef("shop", n), key)


def test_verify_all_reports_every_member_of_a_group_when_several_differ(dbs, monkeypatch):
    dbs.src(SHOP)
    dbs.tgt(TARGET_SCHEMA)
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", dbs.source)
    monkeypatch.setenv("PG_SYNC_TARGET_URL", dbs.target)
    defs = build_defs(CONFIG)
    instance = DagsterInstance.ephemeral()
    assert defs.resolve_job_def("sync_all").execute_in_process(instance=instance).success
    dbs.tgt("UPDATE shop.items SET sku = 'wrong' WHERE order_id = 2; "
            "UPDATE shop.orders SET total = -1 WHERE id = 3; UPDATE shop.customers SET name = 'x' WHERE id = 4")

    result = defs.resolve_job_def("verify_all").execute_in_process(instance=instance, raise_on_error=False)

    assert not result.success
    checks = {(c.asset_key.path[-1], c.check_name): c.passed for c in result.get_asset_check_evaluations()}
    assert len(checks) == 8  # every member's two checks, and the table outside the group
    assert [k for k, passed in sorted(checks.items()) if not passed] == [
        ("customers", "checksum"), ("items", "checksum"), ("orders", "checksum")]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                   and e.step_key == "snapshot_group_shop")
    text = failure.event_specific_data.error.message
    assert all(f"`shop.{n}`" in text for n in ("customers", "orders", "items")), text
