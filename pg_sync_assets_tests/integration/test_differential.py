"""Differential sync against the full copy: from the same source, every kind of change
must leave the same target rows (and the source scope's rows where the mode deletes)."""

from __future__ import annotations

from dataclasses import replace

import psycopg2
import pytest
from psycopg2 import sql

from pg_sync_assets.engine import Mode, TableRef, TableSpec, VerificationError
from pg_sync_assets.engine.compare import key_table
from pg_sync_assets.engine.load.merge import DIFFERENTIAL
from pg_sync_assets_tests.integration.test_types_and_names import TAMPER, ZOO, ZOO_DDL
from pg_sync_assets_tests.support import run_sync, staging_tables, table_text

# 3 zoo rows become 300 (ids 1-3, 11-13, ... 991-993): every type in every bucket.
MORE_ZOO = "INSERT INTO zoo SELECT z.id + k * 10, " + ", ".join(
    ["jb", "j", "ints", "texts", "n", "n2", "f8", "f4", "ts", "tsl", "d", "t", "ttz", "iv", "b", "u", "m",
     "moods", "p", "r", "tr", "nr", "ip", "net", "mac", "money_", "flag", "c3", "vc", "txt", "pt", "x"]
) + " FROM zoo AS z, generate_series(1, 99) AS k;"

ZOO_CHANGES = [
    # one update per column type, each on its own row
    *(f"UPDATE zoo SET {column} = {expression} WHERE id = {11 + 10 * i}"
      for i, (column, expression) in enumerate(TAMPER.items())),
    "INSERT INTO zoo SELECT id + 5000, jb, j, ints, texts, n, n2, f8, f4, ts, tsl, d, t, ttz, iv, b, u, m, "
    "moods, p, r, tr, nr, ip, net, mac, money_, flag, c3, vc, txt, pt, x FROM zoo WHERE id IN (1, 2, 3)",
    "DELETE FROM zoo WHERE id IN (981, 982, 983)",
    "UPDATE zoo SET id = 7001 WHERE id = 971",  # a key change: delete + insert
    "UPDATE zoo SET flag = false WHERE id IN (961, 951)",  # out of `flag IS NOT FALSE`
    "UPDATE zoo SET flag = true WHERE id IN (942, 932)",  # into it
]


def _pair(mode: Mode, **kw) -> tuple[TableSpec, TableSpec]:
    """The same table synced differentially into zoo_diff and by full copy into zoo_full."""
    base = TableSpec(name="zoo", source=ZOO, target=ZOO, mode=mode, **kw)
    return (replace(base, target=TableRef("public", "zoo_diff"), differential="always"),
            replace(base, target=TableRef("public", "zoo_full"), differential="never"))


def _rows(dbs, table: str) -> list[str]:
    return table_text(dbs.target, TableRef("public", table), "id")


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        (Mode.FULL_REFRESH, {}),
        (Mode.FULL_REFRESH, {"where": "flag IS NOT FALSE"}),
        (Mode.MERGE, {"where": "flag IS NOT FALSE"}),
        (Mode.MERGE, {"where": "flag IS NOT FALSE", "delete_missing": True}),
    ],
)
def test_every_kind_of_change_ends_as_the_full_copy_does(dbs, mode, extra):
    dbs.src(ZOO_DDL + MORE_ZOO)
    differential, full = _pair(mode, **extra)
    run_sync(dbs, differential)
    run_sync(dbs, full)
    dbs.src(";".join(ZOO_CHANGES))

    diff_result, full_result = run_sync(dbs, differential), run_sync(dbs, full)

    assert _rows(dbs, "zoo_diff") == _rows(dbs, "zoo_full")
    assert diff_result.method == DIFFERENTIAL and full_result.method != DIFFERENTIAL
    d = diff_result.differential
    assert (d.rows_missing, d.rows_changed) == (diff_result.inserted, diff_result.updated)
    assert diff_result.rows_copied == d.rows_missing + d.rows_changed < full_result.rows_copied
    assert diff_result.verification.source == full_result.verification.source
    assert d.buckets_differing < d.buckets
    if mode is Mode.FULL_REFRESH or extra.get("delete_missing"):
        assert _rows(dbs, "zoo_diff") == table_text(dbs.source, ZOO, "id", extra.get("where", "true"))
        assert diff_result.deleted == d.rows_extra > 0
    else:  # merge keeps the rows gone from the source, in both paths
        assert diff_result.deleted == 0 and diff_result.verification.rows_only_in_target == d.rows_extra > 0


COMPOSITE = TableRef("ledger", "계정")
COMPOSITE_DDL = """
CREATE SCHEMA ledger;
CREATE TABLE ledger."계정" (region text, "번호" int, "잔액" numeric, memo text, PRIMARY KEY (region, "번호"));
INSERT INTO ledger."계정" SELECT (ARRAY['서울', 'Busan', 'é', ''])[1 + i % 4], i, i * 1.5, 'm' || i
FROM generate_series(1, 400) AS i;
"""


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_a_composite_text_key(dbs, mode):
    dbs.src(COMPOSITE_DDL)
    base = TableSpec(name="acct", source=COMPOSITE, target=COMPOSITE, mode=mode, delete_missing=mode is Mode.MERGE)
    differential = replace(base, differential="always")
    run_sync(dbs, differential)
    dbs.src("""UPDATE ledger."계정" SET "잔액" = -1 WHERE "번호" IN (5, 6);
               UPDATE ledger."계정" SET region = '부산' WHERE "번호" = 7;
               DELETE FROM ledger."계정" WHERE "번호" = 8;
               INSERT INTO ledger."계정" VALUES ('서울', 9, 0, 'same number, other region')""")

    result = run_sync(dbs, differential)

    assert result.method == DIFFERENTIAL
    d = result.differential
    assert (d.rows_missing, d.rows_changed, d.rows_extra) == (2, 2, 2)
    assert (result.rows_copied, result.inserted, result.updated, result.deleted) == (4, 2, 2, 2)
    order = 'region, "번호"'
    assert dbs.tgt(f'SELECT t::text FROM ledger."계정" AS t ORDER BY {order}') == \
        dbs.src(f'SELECT t::text FROM ledger."계정" AS t ORDER BY {order}')


# Key texts that COPY's text format escapes (tab, newline, carriage return, backslash,
# backspace, form feed, vertical tab) or that quoting could trip on, beside Korean.
AWKWARD_KEYS = ["a\tb", "line\nbreak", "cr\rlf", "back\\slash", "\\N", "\b\f\v", '"q"', "{x,y}", "한 글", ""]


@pytest.mark.parametrize("batch", [None, 3])
def test_keys_copy_escapes_are_named_exactly(dbs, monkeypatch, batch):
    """Pass 2 reads both sides as COPY text, and the differing keys travel through a table
    of the target (written and read back in batches): every escaped key must come back as
    itself, whatever the batches."""
    if batch is not None:
        monkeypatch.setattr(key_table.KeyTable, "BATCH", batch)
        monkeypatch.setattr(key_table, "KEY_BATCH", batch)
    dbs.src('CREATE TABLE awkward (k text, n int, v text, PRIMARY KEY (k, n))')
    with psycopg2.connect(dbs.source) as conn, conn.cursor() as cur:
        for i, key in enumerate(AWKWARD_KEYS):
            cur.executemany("INSERT INTO awkward VALUES (%s, %s, %s)", [(key, n, f"v{i}-{n}") for n in range(40)])
    spec = TableSpec(name="awkward", source=TableRef("public", "awkward"), target=TableRef("public", "awkward"),
                     mode=Mode.FULL_REFRESH, differential="always")
    run_sync(dbs, spec)
    with psycopg2.connect(dbs.source) as conn, conn.cursor() as cur:
        cur.execute("UPDATE awkward SET v = v || '!' WHERE n = 7")  # one row of every key text
        cur.execute("DELETE FROM awkward WHERE n = 8")
        cur.execute("INSERT INTO awkward SELECT k, 99, 'new' FROM awkward WHERE n = 0")

    result = run_sync(dbs, spec)

    d, count = result.differential, len(AWKWARD_KEYS)
    assert result.method == DIFFERENTIAL
    assert (d.rows_missing, d.rows_changed, d.rows_extra) == (count, count, count)
    order = "k COLLATE \"C\", n"
    assert dbs.tgt(f"SELECT t::text FROM awkward AS t ORDER BY {order}") == \
        dbs.src(f"SELECT t::text FROM awkward AS t ORDER BY {order}")
    assert staging_tables(dbs.target) == []  # the key table went with the run's staging table


def test_an_empty_target_is_filled_by_the_full_copy(dbs):
    dbs.src(ZOO_DDL + MORE_ZOO)
    differential, _ = _pair(Mode.MERGE)
    run_sync(dbs, differential)
    dbs.tgt("TRUNCATE zoo_diff")

    result = run_sync(dbs, differential)

    assert result.method != DIFFERENTIAL and result.differential is None
    assert result.rows_copied == result.inserted == 300


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_an_unchanged_table_is_compared_and_not_written(dbs, mode):
    dbs.src(ZOO_DDL + MORE_ZOO)
    differential = replace(_pair(mode)[0], differential="auto")
    run_sync(dbs, differential)
    before = dbs.tgt("SELECT max(xmin::text::bigint), count(*) FROM zoo_diff")

    result = run_sync(dbs, differential)

    assert result.method == DIFFERENTIAL
    assert (result.rows_copied, result.inserted, result.updated, result.deleted) == (0, 0, 0, 0)
    assert result.differential.buckets_differing == 0 and result.target_rows == 300
    assert result.verification.final == result.verification.source
    assert dbs.tgt("SELECT max(xmin::text::bigint), count(*) FROM zoo_diff") == before


def test_auto_falls_back_to_the_full_copy_when_most_rows_changed(dbs):
    dbs.src(ZOO_DDL + MORE_ZOO)
    differential = replace(_pair(Mode.MERGE)[0], differential="auto")
    run_sync(dbs, differential)
    dbs.src("UPDATE zoo SET txt = coalesce(txt, '') || '!' WHERE id % 2 = 1")

    result = run_sync(dbs, differential)

    assert result.method != DIFFERENTIAL and result.differential.fell_back
    assert result.differential.buckets_differing > result.differential.buckets / 2
    assert result.rows_copied == 300
    assert _rows(dbs, "zoo_diff") == table_text(dbs.source, ZOO, "id")


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_a_target_trigger_that_alters_rows_fails_the_run_and_rolls_back(dbs, mode):
    dbs.src(ZOO_DDL + MORE_ZOO)
    differential = _pair(mode)[0]
    run_sync(dbs, differential)
    dbs.tgt("""CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN NEW.txt := coalesce(NEW.txt, '') || '!'; RETURN NEW; END $$;
               CREATE TRIGGER shout BEFORE INSERT OR UPDATE ON zoo_diff FOR EACH ROW EXECUTE FUNCTION shout()""")
    before = _rows(dbs, "zoo_diff")
    dbs.src("UPDATE zoo SET n = 2 WHERE id = 21")

    with pytest.raises(VerificationError) as caught:
        run_sync(dbs, differential)

    assert "final table rows differ from the source snapshot" in str(caught.value)
    assert "rolled back: the target table is unchanged" in str(caught.value)
    assert _rows(dbs, "zoo_diff") == before


def test_a_percent_sign_in_names_and_where_is_not_a_placeholder(dbs):
    dbs.src("""CREATE TABLE "100%" ("k%s" text PRIMARY KEY, "v%(x)s" text);
               INSERT INTO "100%" SELECT 'k' || i, 'v' || i FROM generate_series(1, 50) AS i""")
    table = TableRef("public", "100%")
    spec = TableSpec(name="pct", source=table, target=table, mode=Mode.MERGE, where="\"k%s\" LIKE 'k%'",
                     differential="always")
    run_sync(dbs, spec)
    dbs.src("""UPDATE "100%" SET "v%(x)s" = 'changed' WHERE "k%s" = 'k7'""")

    result = run_sync(dbs, spec)

    assert (result.method, result.rows_copied, result.updated) == (DIFFERENTIAL, 1, 1)
    conn = psycopg2.connect(dbs.target)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT {} FROM {} WHERE {} = 'k7'").format(
                sql.Identifier("v%(x)s"), table.ident, sql.Identifier("k%s")))
            assert cur.fetchall() == [("changed",)]
    finally:
        conn.close()
