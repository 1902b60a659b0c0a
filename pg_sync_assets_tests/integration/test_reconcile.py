"""Reconcile: exactly the differing rows are rewritten, and the tables end equal."""

from __future__ import annotations

from psycopg2 import sql

from pg_sync_assets.engine import Mode, TableRef, TableSpec
from pg_sync_assets_tests.integration.test_types_and_names import TAMPER, ZOO, ZOO_DDL
from pg_sync_assets_tests.support import compare, run_reconcile, run_sync, staging_tables, table_text

ITEMS = TableRef("public", "items")


def _items(dbs, rows: int = 5000, **kw) -> TableSpec:
    dbs.src("CREATE TABLE items (id int PRIMARY KEY, note text); "
            f"INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, {int(rows)}) AS i")
    spec = TableSpec(name="items", target=ITEMS, source=ITEMS, mode=Mode.MERGE, **kw)
    run_sync(dbs, spec)
    return spec


def test_reconcile_rewrites_only_the_differing_rows(dbs):
    spec = _items(dbs)
    dbs.tgt("UPDATE items SET note = 'broken' WHERE id IN (10, 20, 30); "
            "DELETE FROM items WHERE id IN (40, 50); "
            "INSERT INTO items VALUES (9001, 'stray'), (9002, 'stray')")
    untouched = dbs.tgt("SELECT xmin::text FROM items WHERE id = 60")

    result = run_reconcile(dbs, spec)

    assert (result.difference.changed_count, result.difference.missing_count,
            result.difference.extra_count) == (3, 2, 2)
    assert (result.rows_copied, result.inserted, result.updated, result.deleted) == (5, 2, 3, 2)
    assert dbs.tgt("SELECT xmin::text FROM items WHERE id = 60") == untouched
    assert table_text(dbs.source, ITEMS, "id") == table_text(dbs.target, ITEMS, "id")
    assert result.verification.final == result.verification.source
    assert staging_tables(dbs.target) == []


def test_reconcile_brings_source_deletes_to_a_merge_table(dbs):
    spec = _items(dbs, rows=300)
    dbs.src("DELETE FROM items WHERE id > 295")
    assert run_sync(dbs, spec).verification.rows_only_in_target == 5

    result = run_reconcile(dbs, spec)

    assert (result.rows_copied, result.deleted) == (0, 5)
    assert compare(dbs, spec).checksums_match


def test_reconcile_repairs_every_corruption_of_the_type_zoo_at_once(dbs):
    dbs.src(ZOO_DDL)
    spec = TableSpec(name="zoo", target=ZOO, source=ZOO, mode=Mode.FULL_REFRESH)
    run_sync(dbs, spec)
    dbs.tgt(sql.SQL("UPDATE zoo SET {} WHERE id = 1").format(sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.SQL(e)) for c, e in TAMPER.items())))
    dbs.tgt("UPDATE zoo SET txt = 'x' WHERE id = 3")

    result = run_reconcile(dbs, spec)

    assert (result.updated, result.inserted, result.deleted) == (2, 0, 0)
    assert table_text(dbs.source, ZOO, "id") == table_text(dbs.target, ZOO, "id")


def test_reconcile_of_equal_tables_changes_nothing(dbs):
    spec = _items(dbs, rows=100)
    before = dbs.tgt("SELECT max(xmin::text::bigint) FROM items")
    result = run_reconcile(dbs, spec)
    assert (result.rows_copied, result.inserted, result.updated, result.deleted) == (0, 0, 0, 0)
    assert dbs.tgt("SELECT max(xmin::text::bigint) FROM items") == before


def test_reconcile_of_a_keyless_table_copies_its_scope_again(dbs):
    dbs.src("CREATE TABLE log (line text); INSERT INTO log VALUES ('a'), ('b')")
    spec = TableSpec(name="log", target=TableRef("public", "log"), source=TableRef("public", "log"))
    run_sync(dbs, spec)
    dbs.tgt("UPDATE log SET line = 'tampered' WHERE line = 'a'")

    result = run_reconcile(dbs, spec)

    assert result.difference is None and result.rows_copied == 2 and result.verification is not None
    assert dbs.tgt("SELECT line FROM log ORDER BY 1") == [("a",), ("b",)]
