"""`on_schema_change`: which source changes a run applies to an existing target (inside
its final transaction, listed in the result), and which it refuses with the whole list
of differences and nothing written."""

from __future__ import annotations

import pytest

from pg_sync_assets.config import parse_config
from pg_sync_assets.engine import ConfigError, Mode, SchemaMismatchError, TableRef, TableSpec
from pg_sync_assets.engine.plan.evolve import widens
from pg_sync_assets_tests.support import compare, run_reconcile, run_sync, table_text

ITEMS = TableRef("public", "items")

SEED = """
CREATE TABLE items (id int PRIMARY KEY, qty smallint NOT NULL, code varchar(10) NOT NULL,
                    note varchar(10), price numeric(8,2), at timestamptz);
INSERT INTO items SELECT i, i, 'c' || i, 'n' || i, i * 1.25, timestamptz '2026-11-01 00:00+00' + i * interval '1 h'
FROM generate_series(1, 100) AS i;
"""

# Every change `evolve` allows, made at once in the source.
WIDEN_ALL = """
ALTER TABLE items ALTER COLUMN qty TYPE bigint, ALTER COLUMN code TYPE varchar(40),
                  ALTER COLUMN note TYPE text, ALTER COLUMN price TYPE numeric(12,3),
                  ALTER COLUMN code DROP NOT NULL, ADD COLUMN "비고" text;
UPDATE items SET qty = 5000000000, code = repeat('x', 30), price = 12345678.125, "비고" = '메모 ' || id
WHERE id <= 3;
"""


def _spec(mode: Mode = Mode.MERGE, policy: str = "fail", **kw) -> TableSpec:
    return TableSpec(name="items", source=ITEMS, target=ITEMS, mode=mode, on_schema_change=policy, **kw)


def _columns(dbs) -> list[tuple[str, str, bool]]:
    return dbs.tgt("SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                   "WHERE attrelid = 'items'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum")


@pytest.mark.parametrize("mode", [Mode.MERGE, Mode.FULL_REFRESH])
def test_add_columns_adds_new_source_columns_in_the_run(dbs, mode):
    dbs.src(SEED)
    run_sync(dbs, _spec(mode))
    dbs.src("ALTER TABLE items ADD COLUMN \"비고\" text, ADD COLUMN flags int[] DEFAULT '{1,2}'; "
            "UPDATE items SET \"비고\" = '메모 ' || id WHERE id <= 10")

    result = run_sync(dbs, _spec(mode, "add_columns"))

    assert result.schema_changes == ("added column `비고` text", "added column `flags` integer[]")
    assert result.method != "differential"  # a new column changes every row: the whole scope is copied
    assert result.verification.final == result.verification.source
    assert [c[0] for c in _columns(dbs)][-2:] == ["비고", "flags"]
    assert table_text(dbs.target, ITEMS, "id") == table_text(dbs.source, ITEMS, "id")
    assert compare(dbs, _spec(mode)).checksums_match
    # the next run finds nothing to change
    again = run_sync(dbs, _spec(mode, "add_columns"))
    assert again.schema_changes == () and again.method == "differential"


def test_evolve_widens_types_and_drops_not_null_without_loss(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.src(WIDEN_ALL)

    result = run_sync(dbs, _spec(policy="evolve"))

    assert result.schema_changes == (
        "widened column `qty` from smallint to bigint",
        "widened column `code` from character varying(10) to character varying(40)",
        "dropped NOT NULL of column `code`",
        "widened column `note` from character varying(10) to text",
        "widened column `price` from numeric(8,2) to numeric(12,3)",
        "added column `비고` text",
    )
    assert _columns(dbs) == [
        ("id", "integer", True), ("qty", "bigint", True), ("code", "character varying(40)", False),
        ("note", "text", False), ("price", "numeric(12,3)", False), ("at", "timestamp with time zone", False),
        ("비고", "text", False)]
    assert table_text(dbs.target, ITEMS, "id") == table_text(dbs.source, ITEMS, "id")


@pytest.mark.parametrize(("policy", "change", "expected"), [
    ("fail", 'ALTER TABLE items ADD COLUMN "비고" text',
     "column `비고` (text) is missing in the target; column `추가` (integer) is missing in the target. "
     "Alter the target table (or drop it to let pg_sync_assets recreate it), or set "
     "`on_schema_change: add_columns`"),
    ("add_columns", "ALTER TABLE items ALTER COLUMN qty TYPE bigint",
     "column `qty` is bigint in the source but smallint in the target. `on_schema_change: add_columns` "
     "only adds columns"),
    ("evolve", "ALTER TABLE items ALTER COLUMN code TYPE varchar(5) USING left(code, 5)",
     "column `code` is character varying(5) in the source but character varying(10) in the target, "
     "a change that can lose data"),
    ("evolve", "ALTER TABLE items ALTER COLUMN price TYPE numeric(8,1)",
     "column `price` is numeric(8,1) in the source but numeric(8,2) in the target, a change that can lose data"),
    ("evolve", "ALTER TABLE items ALTER COLUMN at TYPE timestamp",
     "column `at` is timestamp without time zone in the source but timestamp with time zone in the target"),
    ("evolve", "ALTER TABLE items ALTER COLUMN code TYPE integer USING length(code)",
     "column `code` is integer in the source but character varying(10) in the target"),
    ("evolve", "ALTER TABLE items DROP COLUMN note",
     "column `note` is in the target but no longer in the source (dropped or renamed there)"),
    ("add_columns", "ALTER TABLE items RENAME COLUMN note TO remark",
     "column `note` is in the target but no longer in the source (dropped or renamed there)"),
    # `fail` is the strictest mode: it refuses what `evolve` refuses (it once kept the stale column)
    ("fail", "ALTER TABLE items DROP COLUMN note",
     "column `note` is in the target but no longer in the source (dropped or renamed there); drop or "
     "rename it in the target, or name it in `columns: {exclude: [...]}` to keep it as a target-only column"),
])
def test_a_change_the_policy_does_not_allow_is_refused_with_nothing_written(dbs, policy, change, expected):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    before = (table_text(dbs.target, ITEMS, "id"), _columns(dbs))
    dbs.src(change + '; ALTER TABLE items ADD COLUMN "추가" int')  # plus one change it would allow

    with pytest.raises(SchemaMismatchError) as caught:
        run_sync(dbs, _spec(policy=policy))

    message = str(caught.value)
    assert message.startswith(
        "plan failed for `public.items`: target table `public.items` does not match the source: ")
    assert expected in message
    assert message.endswith("; nothing was written")
    if policy == "fail":  # every difference is listed, the allowed kinds too
        assert "column `추가` (integer) is missing in the target" in message
    assert (table_text(dbs.target, ITEMS, "id"), _columns(dbs)) == before


def test_a_schema_change_rolls_back_with_a_failed_run(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.tgt("CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN NEW.note := NEW.note || '!'; RETURN NEW; END $$; "
            "CREATE TRIGGER corrupt BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION corrupt()")
    before = _columns(dbs)
    dbs.src('ALTER TABLE items ADD COLUMN "비고" text; UPDATE items SET "비고" = \'x\'')

    with pytest.raises(Exception, match="final table rows differ"):
        run_sync(dbs, _spec(policy="add_columns"))

    assert _columns(dbs) == before


def test_reconcile_asks_for_a_sync_when_the_target_needs_schema_changes(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.src('ALTER TABLE items ADD COLUMN "비고" text')
    with pytest.raises(SchemaMismatchError) as caught:
        run_reconcile(dbs, _spec(policy="add_columns"))
    assert "needs schema changes first (added column `비고` text); materialize the asset" in str(caught.value)


def test_a_generated_target_column_is_not_a_dropped_one(dbs):
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE items (id int PRIMARY KEY, qty smallint NOT NULL, code varchar(10) NOT NULL, "
            "note varchar(10), price numeric(8,2), at timestamptz, "
            "total numeric GENERATED ALWAYS AS (qty * price) STORED)")
    result = run_sync(dbs, _spec(policy="evolve"))
    assert result.target_rows == 100
    assert dbs.tgt("SELECT total FROM items WHERE id = 2") == [(pytest.approx(5),)]


@pytest.mark.parametrize(("old", "new", "lossless"), [
    ("smallint", "integer", True), ("integer", "bigint", True), ("bigint", "integer", False),
    ("character varying(10)", "character varying(11)", True), ("character varying(10)", "text", True),
    ("character varying(10)", "character varying", True), ("character varying(10)", "character varying(10)", False),
    ("character varying", "character varying(10)", False), ("text", "character varying(10)", False),
    ("numeric(8,2)", "numeric(9,2)", True), ("numeric(8,2)", "numeric(9,3)", True),
    ("numeric(8,2)", "numeric(9,1)", False), ("numeric(8,2)", "numeric(8,3)", False),
    ("numeric(8,2)", "numeric", True), ("numeric", "numeric(8,2)", False),
    ("integer", "numeric", False), ("real", "double precision", False), ("integer", "text", False),
])
def test_which_type_changes_keep_every_value(old, new, lossless):
    assert widens(old, new) is lossless


def test_on_schema_change_is_checked_at_load_and_may_be_a_default():
    (spec,) = parse_config({"defaults": {"on_schema_change": "evolve"}, "tables": [{"source": "a.b"}]})
    assert spec.on_schema_change == "evolve"
    with pytest.raises(ConfigError, match=r"`on_schema_change` must be one of \['fail', 'add_columns', "
                                          r"'evolve'\], got 'sync'"):
        parse_config({"tables": [{"source": "a.b", "on_schema_change": "sync"}]})


@pytest.mark.parametrize("policy", ["fail", "add_columns", "evolve"])
def test_a_target_only_column_named_in_columns_exclude_is_kept_and_never_written(dbs, policy):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.tgt("ALTER TABLE items ADD COLUMN loaded_by text DEFAULT 'etl'; UPDATE items SET loaded_by = 'kept'")
    dbs.src("UPDATE items SET qty = 0 WHERE id = 1; INSERT INTO items VALUES (101, 1, 'c', 'n', 1, now())")

    result = run_sync(dbs, _spec(policy=policy, columns_exclude=("loaded_by",)))

    assert (result.inserted, result.updated) == (1, 1)
    assert dbs.tgt("SELECT loaded_by, count(*) FROM items GROUP BY 1 ORDER BY 1") == [("etl", 1), ("kept", 100)]


def test_a_columns_exclude_name_neither_side_has_is_refused(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    with pytest.raises(ConfigError) as caught:
        run_sync(dbs, _spec(columns_exclude=("nte",)))
    assert "`columns.exclude` names column(s) ['nte'] that neither the source nor the target has" in str(
        caught.value)
