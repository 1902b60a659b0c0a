"""Localization: a failed comparison is narrowed down to the differing keys."""

from __future__ import annotations

import threading

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from pg_sync_assets.engine import Mode, TableRef, TableSpec
from pg_sync_assets.engine.compare.localize import bucket_count, bucket_of, bucketing
from pg_sync_assets.engine.plan.plan import plan_table
from pg_sync_assets.engine.verify.buckets import INTEGER_BLOCKS, KEY_TEXT, Bucketing
from pg_sync_assets_tests.integration.test_failures import wait_for_first
from pg_sync_assets_tests.integration.test_types_and_names import TAMPER, ZOO, ZOO_DDL
from pg_sync_assets_tests.support import compare, localize, run_sync

ITEMS = TableRef("public", "items")


def _items(dbs, rows: int) -> TableSpec:
    dbs.src(f"CREATE TABLE items (id int PRIMARY KEY, note text, n numeric); "
            f"INSERT INTO items SELECT i, 'n' || i, i / 4.0 FROM generate_series(1, {int(rows)}) AS i")
    spec = TableSpec(name="items", target=ITEMS, source=ITEMS, mode=Mode.MERGE)
    run_sync(dbs, spec)
    return spec


def test_every_single_value_corruption_of_the_type_zoo_is_localized_to_its_key(dbs):
    dbs.src(ZOO_DDL)
    spec = TableSpec(name="zoo", target=ZOO, source=ZOO, mode=Mode.MERGE)
    run_sync(dbs, spec)
    for column, expression in TAMPER.items():
        dbs.tgt(sql.SQL("UPDATE zoo SET {} = {} WHERE id = 1").format(
            sql.Identifier(column), sql.SQL(expression)))
        diff = localize(dbs, spec)
        assert (diff.changed, diff.missing, diff.extra) == (["(1)"], [], []), column
        run_sync(dbs, spec)
    assert localize(dbs, spec).total == 0


def test_missing_extra_and_swapped_rows_are_told_apart(dbs):
    spec = _items(dbs, 500)
    dbs.tgt("DELETE FROM items WHERE id = 7; INSERT INTO items VALUES (9001, 'x', 1), (9002, 'y', 2); "
            "UPDATE items SET note = CASE id WHEN 10 THEN 'n11' ELSE 'n10' END WHERE id IN (10, 11)")

    diff = localize(dbs, spec)

    assert (diff.missing, diff.extra, diff.changed) == (["(7)"], ["(9001)", "(9002)"], ["(10)", "(11)"])
    assert (diff.missing_count, diff.extra_count, diff.changed_count) == (1, 2, 2)


def test_ten_differences_in_fifty_thousand_rows_read_only_their_buckets(dbs):
    spec = _items(dbs, 50_000)
    changed = [3, 999, 5000, 12345, 20000, 27182, 31415, 40000, 44444, 49999]
    dbs.tgt("UPDATE items SET n = n + 0.25 WHERE id = ANY(%s)", (changed,))

    diff = localize(dbs, spec, rows_hint=50_000)

    assert diff.changed == [f"({k})" for k in sorted(changed, key=lambda k: f"({k})")]
    assert diff.differing_buckets == 10
    assert diff.buckets == bucket_count(50_000) == 4096
    assert diff.keys_compared < 500  # about 10 buckets of ~12 rows, not the table


def test_the_limit_caps_the_listed_keys_but_not_the_counts(dbs):
    spec = _items(dbs, 300)
    dbs.tgt("DELETE FROM items WHERE id <= 50")
    diff = localize(dbs, spec, limit=5)
    assert diff.missing_count == 50 and len(diff.missing) == 5


def test_composite_korean_keys_and_the_where_scope(dbs):
    dbs.src('CREATE TABLE "종목" ("시장" text, "코드" text, "가격" numeric, PRIMARY KEY ("시장", "코드")); '
            "INSERT INTO \"종목\" SELECT (ARRAY['코스피','코스닥'])[1 + mod(i, 2)], lpad(i::text, 6, '0'), i "
            "FROM generate_series(1, 400) AS i")
    table = TableRef("public", "종목")
    spec = TableSpec(name="stocks", target=table, source=table, mode=Mode.MERGE, where="\"시장\" = '코스닥'")
    run_sync(dbs, spec)
    dbs.tgt('UPDATE "종목" SET "가격" = 0 WHERE "코드" = \'000003\'')

    diff = localize(dbs, spec)

    assert diff.changed == ["(코스닥,000003)"] and diff.total == 1


def test_values_swapped_between_two_rows_fail_the_checksum_with_equal_counts(dbs):
    spec = _items(dbs, 100)
    dbs.tgt("UPDATE items SET n = CASE id WHEN 1 THEN 0.5 ELSE 0.25 END WHERE id IN (1, 2)")
    comparison = compare(dbs, spec)
    assert comparison.rows_match and not comparison.checksums_match
    assert localize(dbs, spec).changed == ["(1)", "(2)"]


# 20,000 keys of each shape, spread over 1024 buckets (about 20 a bucket).
KEY_SHAPES = {
    "dense": "i",
    "dense, negative": "-i",
    "multiples of 1000": "i * 1000",
    "multiples of 2^21 (one a stretch)": "i::bigint << 21",
    "multiples of 16 (one a block)": "i * 16",
    "snowflake-style: time, worker, sequence": "((1700000000000 + i / 3) << 22) | ((i % 5) << 12) | (i % 3)",
    "random 64-bit": "(random() * 1.8e19 - 9.2e18)::bigint",
    "the extremes": "CASE WHEN i % 2 = 0 THEN 9223372036854775807 - i ELSE -9223372036854775808 + i END",
}


def _spread(dbs, by: str, keys: str, rows: int = 20000) -> tuple[int, float]:
    """(fullest bucket, mean rows in the bucket of a row: what pass 2 reads per difference)."""
    bucket = bucket_of(Bucketing(("k",), by), 1024)
    return dbs.src(sql.SQL(
        "SELECT max(n), sum(n * n)::float / sum(n) FROM (SELECT {} AS b, count(*) AS n FROM "
        "(SELECT ({})::bigint AS k FROM generate_series(1, {}) AS i) AS keys GROUP BY b) AS buckets"
    ).format(bucket, sql.SQL(keys), sql.Literal(rows)))[0]


def test_an_integer_key_spreads_over_its_buckets_as_evenly_as_the_key_text_hash(dbs):
    for shape, keys in KEY_SHAPES.items():
        fullest, per_row = _spread(dbs, INTEGER_BLOCKS, keys)
        hashed_fullest, hashed_per_row = _spread(dbs, KEY_TEXT, keys)
        assert per_row <= hashed_per_row * 1.1 and fullest <= hashed_fullest * 1.5, (shape, fullest, per_row)
    # 16 × 1024 consecutive keys (one stretch) fill every bucket with one block of 16
    assert _spread(dbs, INTEGER_BLOCKS, "i - 1", rows=16 * 1024) == (16, 16.0)


def test_the_bucketing_follows_the_key_type(dbs):
    dbs.src("CREATE TABLE small (k smallint PRIMARY KEY); CREATE TABLE big (k bigint PRIMARY KEY); "
            "CREATE TABLE num (k numeric PRIMARY KEY); CREATE TABLE txt (k text PRIMARY KEY); "
            "CREATE TABLE two (a int, b int, PRIMARY KEY (a, b))")
    by = {}
    with psycopg2.connect(dbs.source) as conn, conn.cursor() as cur:
        for name in ("small", "big", "num", "txt", "two"):
            table = TableRef("public", name)
            by[name] = bucketing(plan_table(cur, TableSpec(name=name, source=table, target=table))).by
    assert by == {"small": INTEGER_BLOCKS, "big": INTEGER_BLOCKS, "num": KEY_TEXT, "txt": KEY_TEXT,
                  "two": KEY_TEXT}


def test_extreme_and_negative_integer_keys_are_localized(dbs):
    dbs.src("CREATE TABLE items (id bigint PRIMARY KEY, note text); "
            "INSERT INTO items SELECT i * 7919 - 500000, 'n' || i FROM generate_series(1, 2000) AS i; "
            "INSERT INTO items VALUES (9223372036854775807, 'max'), (-9223372036854775808, 'min')")
    spec = TableSpec(name="items", target=ITEMS, source=ITEMS, mode=Mode.MERGE)
    run_sync(dbs, spec)
    dbs.tgt("UPDATE items SET note = 'x' WHERE id IN (9223372036854775807, -9223372036854775808, -492081)")

    diff = localize(dbs, spec, rows_hint=2002)

    assert sorted(diff.changed) == sorted(["(9223372036854775807)", "(-9223372036854775808)", "(-492081)"])
    assert diff.keys_compared < 200


SLOW_SOURCE = "(SELECT nap(2)) = ''"  # evaluated once, as an InitPlan


def _pass_2_in_background(dbs, spec: TableSpec, target_url: str):
    """Pass 2 alone (both sides' bucket sums given) in a thread, the source side slowed
    by SLOW_SOURCE; (thread, outcome list: the Difference or the exception)."""
    from dataclasses import replace

    from pg_sync_assets.engine import connect
    from pg_sync_assets.engine.compare.localize import bucket_sums
    from pg_sync_assets.engine.compare.localize import localize as localize_engine

    outcome: list = []

    def work() -> None:
        source = connect(dbs.source, readonly=True, role="source")
        target = connect(target_url, readonly=True, role="target")
        try:
            with source.cursor() as cur:
                plan = plan_table(cur, spec)
            by, n = bucketing(plan), bucket_count(2000)
            owner = connect(dbs.target, readonly=True, role="target")  # can read the target's table
            try:
                sums = {side: bucket_sums(conn, spec, by, plan.columns, side, n)
                        for side, conn in (("source", source), ("target", owner))}
            finally:
                owner.close()
            outcome.append(localize_engine(
                replace(spec, where=SLOW_SOURCE), source, target, by, plan.columns, 2000,
                target_spec=spec, source_buckets=sums["source"], target_buckets=sums["target"]))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)
        finally:
            source.close()
            target.close()

    worker = threading.Thread(target=work)
    worker.start()
    return worker, outcome


def test_pass_2_starts_both_sides_before_reading_either(dbs):
    spec = _items(dbs, 2000)
    dbs.tgt("UPDATE items SET note = 'x' WHERE id IN (5, 1500)")
    worker, outcome = _pass_2_in_background(dbs, spec, dbs.target)
    wait_for_first(lambda: dbs.src("SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                   "AND query LIKE 'COPY%%'"))
    # While the source's COPY still sleeps, the target's has already been sent.
    target_sessions = dbs.tgt("SELECT query FROM pg_stat_activity WHERE application_name = 'pg_sync_assets' "
                              "AND query LIKE 'COPY%%'")
    worker.join(timeout=30)
    assert [q.split(" FROM ")[0] for (q,) in target_sessions] == ['COPY (SELECT "k", "h", "p0"']
    assert len(outcome) == 1 and sorted(outcome[0].changed) == ["(1500)", "(5)"], outcome


def test_a_side_failing_in_pass_2_stops_the_other_and_raises(dbs):
    from psycopg2.extensions import make_dsn

    spec = _items(dbs, 2000)
    dbs.tgt("UPDATE items SET note = 'x' WHERE id = 5; CREATE ROLE no_reader LOGIN")
    try:
        worker, outcome = _pass_2_in_background(dbs, spec, make_dsn(dbs.target, user="no_reader"))
        worker.join(timeout=30)
    finally:
        dbs.tgt("DROP ROLE no_reader")
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg2.errors.InsufficientPrivilege), outcome
    assert "permission denied for table items" in str(outcome[0])
    assert not [t for t in threading.enumerate() if t.name == "pg-sync-localize"]
