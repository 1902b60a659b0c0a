"""Every kind of value and every kind of identifier survives the trip unchanged."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from pg_sync_assets.engine import Mode, TableRef, TableSpec
from pg_sync_assets_tests.support import compare, run_sync, table_text

ZOO = TableRef("public", "zoo")

ZOO_DDL = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TABLE zoo (
    id bigint PRIMARY KEY,
    jb jsonb, j json, ints int[], texts text[], n numeric, n2 numeric(12,2),
    f8 float8, f4 float4, ts timestamptz, tsl timestamp, d date, t time, ttz timetz,
    iv interval, b bytea, u uuid, m mood, moods mood[], p positive_int,
    r int4range, tr tstzrange, nr numrange, ip inet, net cidr, mac macaddr,
    money_ money, flag boolean, c3 char(3), vc varchar(5), txt text, pt point, x xml
);
INSERT INTO zoo VALUES
 (1, '{"a": [1, 2.50], "k": "한글"}', '{"a":   1,  "b": [ ]}', '{1,NULL,3}',
  '{"NULL",NULL,"","a,b","q\"uote"}', 1.5, 12.30, 0, 1.5, '2026-11-21 13:45:01.123456+09',
  '2026-11-21 13:45:01.999999', '2026-02-28', '23:59:59.999999', '12:00:00+05:30',
  '1 year 2 mons 3 days 04:05:06.000007', '\xdeadbeef00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  'happy', '{sad,ok}', 7, '[1,10)', '[2026-01-01 00:00+00,2026-02-01 00:00+00)', '(1.5,2.50]',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, true, 'ab', 'abcde',
  E'tab\there\nnew line \\ backslash 한국어 ''quote''', '(1.5,-2)', '<a x="1">t</a>'),
 (2, 'null', 'null', '{}', '{}', 'NaN', -0.01, 'NaN', '-Infinity', 'infinity', '-infinity',
  '0001-01-01', '00:00', '00:00+00', '-1 days', '\x', '00000000-0000-0000-0000-000000000000',
  'sad', '{}', 1, 'empty', '(,)', 'empty', '::1', '::/0', '00:00:00:00:00:00', -0.5, false,
  '', '', '', '(0,0)', ''),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, '-0', 'Infinity', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, 'NULL', NULL, NULL);
"""

# One change per column that a careless sync or checksum would miss: same value by `=`
# but different text (scale, sign of zero, json spacing, interval units), or a tiny change.
TAMPER = {
    "jb": "jb || '{\"z\": 1}'", "j": "'{\"a\": 1, \"b\": []}'", "ints": "'{1,NULL,4}'",
    "texts": "'{NULL,NULL,\"\",\"a,b\",\"q\\\"uote\"}'", "n": "1.50", "n2": "12.31",
    "f8": "'-0'", "f4": "1.5000001", "ts": "ts + interval '1 microsecond'",
    "tsl": "tsl - interval '1 microsecond'", "d": "d + 1", "t": "'23:59:59.999998'",
    "ttz": "'12:00:00+05'", "iv": "'1 year 2 mons 3 days 04:05:06.000008'",
    "b": "'\\xdeadbeef01'", "u": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'", "m": "'ok'",
    "moods": "'{ok,sad}'", "p": "8", "r": "'[1,11)'", "tr": "'[2026-01-01 00:00+00,2026-02-01 00:00+01)'",
    "nr": "'(1.50,2.50]'", "ip": "'192.168.0.1/25'", "net": "'10.0.0.0/9'",
    "mac": "'08:00:2b:01:02:04'", "money_": "12.35", "flag": "false", "c3": "'ac'",
    "vc": "'abcdf'", "txt": "txt || ' '", "pt": "'(1.5,-2.0000001)'", "x": "'<a x=\"2\">t</a>'",
}


def _zoo_spec(mode: Mode = Mode.MERGE) -> TableSpec:
    return TableSpec(name="zoo", target=ZOO, source=ZOO, mode=mode)


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_type_zoo_round_trips_exactly(dbs, mode):
    dbs.src(ZOO_DDL)
    result = run_sync(dbs, _zoo_spec(mode))

    assert result.rows_copied == 3
    assert table_text(dbs.source, ZOO, "id") == table_text(dbs.target, ZOO, "id")
    assert dbs.tgt("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                   "WHERE attrelid = 'zoo'::regclass AND attname IN ('m', 'moods', 'p', 'n2') "
                   "ORDER BY attnum") == [("numeric(12,2)",), ("mood",), ("mood[]",), ("integer",)]
    assert compare(dbs, _zoo_spec()).checksums_match


def test_checksum_catches_and_merge_repairs_every_single_value_change(dbs):
    dbs.src(ZOO_DDL)
    run_sync(dbs, _zoo_spec())
    assert set(TAMPER) == {c for c in _columns(dbs) if c != "id"}

    for column, expression in TAMPER.items():
        dbs.tgt(sql.SQL("UPDATE zoo SET {} = {} WHERE id = 1").format(
            sql.Identifier(column), sql.SQL(expression)))
        assert not compare(dbs, _zoo_spec()).checksums_match, f"checksum missed a change in {column}"
        repaired = run_sync(dbs, _zoo_spec())
        assert repaired.updated == 1, f"merge did not rewrite the changed {column}"
        assert compare(dbs, _zoo_spec()).checksums_match, column


# Changes a cheaper row hash would miss, each caught by the one `verify.row_hash` uses:
# a type's own hash folds 64 bits to 32 (bigint 1 and 2^32, timestamps 2^32+1 µs apart)
# and ignores an array's dimensions; a nondeterministic collation hashes and compares
# 'abc' like 'ABC'; a sum of per-column hashes cannot see two rows swapping a value.
HASH_TRAPS_DDL = """
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE traps (id int PRIMARY KEY, big bigint, at timestamptz, arr int[], email text COLLATE ci,
                    name varchar(20) COLLATE ci, tags text[] COLLATE ci, pos int);
INSERT INTO traps VALUES
 (1, 1, '2000-01-01 00:00:00+00', '{1,2,3,4}', 'kim@example.com', 'Kim', '{a,b}', 1),
 (2, 2, '2000-01-02 00:00:00+00', '{5,6}', 'lee@example.com', 'Lee', '{c}', 2);
CREATE TABLE swaps (id int PRIMARY KEY, pos int);
INSERT INTO swaps VALUES (1, 1), (2, 2);
"""
HASH_TRAPS = [
    "UPDATE traps SET big = 4294967296 WHERE id = 1",
    "UPDATE traps SET at = '2000-01-01 01:11:34.967297+00' WHERE id = 1",
    "UPDATE traps SET arr = '{{1,2},{3,4}}' WHERE id = 1",
    "UPDATE traps SET arr = '[0:1]={5,6}' WHERE id = 2",
    "UPDATE traps SET email = 'KIM@example.com' WHERE id = 1",
    "UPDATE traps SET name = 'KIM' WHERE id = 1",
    "UPDATE traps SET tags = '{A,b}' WHERE id = 1",
    "UPDATE traps SET pos = 3 - pos",  # rows 1 and 2 swap positions
    "UPDATE swaps SET pos = 3 - pos",  # the same where nothing else in the rows differs
]


@pytest.mark.parametrize("differential", ["never", "always"])
@pytest.mark.parametrize("change", HASH_TRAPS)
def test_checksum_and_merge_see_what_equality_and_folded_hashes_miss(dbs, change, differential):
    dbs.src(HASH_TRAPS_DDL)
    dbs.tgt("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    table = TableRef("public", change.split()[1])
    spec = TableSpec(name=table.name, source=table, target=table, mode=Mode.MERGE, differential=differential)
    run_sync(dbs, spec)
    dbs.src(change)

    assert not compare(dbs, spec).checksums_match, change
    repaired = run_sync(dbs, spec)

    assert repaired.updated >= 1, f"{change}: the run wrote nothing"
    assert compare(dbs, spec).checksums_match
    assert table_text(dbs.source, spec.source, "id") == table_text(dbs.target, spec.target, "id")


def test_the_traps_are_real(dbs):
    """Each trap fools the obvious hash or comparison (checked on the server, not assumed)."""
    dbs.src(HASH_TRAPS_DDL)
    fooled = dbs.src("""
        SELECT hashint8extended(1, 0) = hashint8extended(4294967296, 0),
               hash_record_extended(ROW(timestamptz '2000-01-01 00:00:00+00'), 0)
                 = hash_record_extended(ROW(timestamptz '2000-01-01 01:11:34.967297+00'), 0),
               hash_array_extended('{1,2,3,4}'::int[], 0) = hash_array_extended('{{1,2},{3,4}}'::int[], 0),
               hash_record_extended(ROW('kim@example.com'::text COLLATE ci), 0)
                 = hash_record_extended(ROW('KIM@example.com'::text COLLATE ci), 0),
               NOT (ROW('Kim'::varchar COLLATE ci) IS DISTINCT FROM ROW('KIM'::varchar COLLATE ci)),
               (SELECT sum(hash_record_extended(ROW(id, pos), 0)) FROM swaps)
                 = (SELECT sum(hash_record_extended(ROW(id, 3 - pos), 0)) FROM swaps)""")
    assert fooled == [(True,) * 6]


def test_checksums_agree_whatever_the_servers_session_defaults(dbs):
    dbs.src(ZOO_DDL)
    run_sync(dbs, _zoo_spec())
    target_db = dbs.tgt("SELECT current_database()")[0][0]
    dbs.tgt(sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Seoul'; "
                    "ALTER DATABASE {} SET DateStyle = 'SQL, DMY'; "
                    "ALTER DATABASE {} SET IntervalStyle = 'iso_8601'; "
                    "ALTER DATABASE {} SET extra_float_digits = -3; "
                    "ALTER DATABASE {} SET bytea_output = 'escape'").format(
        *[sql.Identifier(target_db)] * 5))

    assert compare(dbs, _zoo_spec()).checksums_match


def _columns(dbs) -> list[str]:
    return [r[0] for r in dbs.src("SELECT attname FROM pg_attribute WHERE attrelid = 'zoo'::regclass "
                                  "AND attnum > 0 ORDER BY attnum")]


NAMES_DDL = """
CREATE SCHEMA "Raw Data";
CREATE TABLE "Raw Data"."raw_data_인포맥스종목마스터" (
    "종목코드" text PRIMARY KEY, "Mixed Case" text, "select" int, "user" text,
    "a""quote" text, "with space" numeric);
INSERT INTO "Raw Data"."raw_data_인포맥스종목마스터"
SELECT lpad(i::text, 6, '0'), 'Name ' || i, i, '사용자' || i, 'q"' || i, i / 3.0
FROM generate_series(1, 100) AS i;
"""


@pytest.mark.parametrize("differential", ["auto", "never"])
@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_korean_mixed_case_spaced_and_reserved_identifiers(dbs, mode, differential):
    dbs.src(NAMES_DDL)
    source = TableRef("Raw Data", "raw_data_인포맥스종목마스터")
    target = TableRef("분석 Schema", "Select")
    spec = TableSpec(name="stock_master", source=source, target=target, mode=mode, differential=differential,
                     where='"select" > 50 AND "user" LIKE \'사용자%\'')

    result = run_sync(dbs, spec)
    dbs.src('UPDATE "Raw Data"."raw_data_인포맥스종목마스터" SET "a""quote" = \'변경\' '
            "WHERE \"종목코드\" = '000077'")
    again = run_sync(dbs, spec)

    assert result.rows_copied == 50
    rewrites = mode is Mode.FULL_REFRESH and differential == "never"  # truncate + insert
    assert (again.inserted, again.updated) == ((50, 0) if rewrites else (0, 1))
    assert dbs.tgt('SELECT "a""quote" FROM "분석 Schema"."Select" WHERE "종목코드" = \'000077\'') == [
        ("변경",)]
    assert compare(dbs, spec).checksums_match


def test_generated_columns_are_recreated_not_copied(dbs):
    dbs.src("CREATE TABLE g (id int PRIMARY KEY, price numeric, qty int, "
            "total numeric GENERATED ALWAYS AS (price * qty) STORED); "
            "INSERT INTO g (id, price, qty) SELECT i, i * 1.5, i FROM generate_series(1, 20) i")
    spec = TableSpec(name="g", target=TableRef("public", "g"), source=TableRef("public", "g"),
                     mode=Mode.MERGE)

    run_sync(dbs, spec)
    dbs.src("UPDATE g SET qty = 100 WHERE id = 1")
    result = run_sync(dbs, spec)

    assert result.updated == 1
    assert dbs.tgt("SELECT attgenerated FROM pg_attribute WHERE attrelid = 'g'::regclass "
                   "AND attname = 'total'") == [("s",)]
    assert dbs.tgt("SELECT total FROM g WHERE id = 1")[0][0] == 150
    assert compare(dbs, spec).checksums_match
