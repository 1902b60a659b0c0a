"""`columns: {include | exclude}`: columns left out are never read from the source nor
created in the target, and the checks compare the copied columns only.

The proof that a column is never read: the sync connects as a role that may read only
the copied columns (column privileges), so any statement touching another column fails
with `permission denied`.
"""

from __future__ import annotations

import uuid

import pytest
from psycopg2.extensions import make_dsn

from pg_sync_assets.config import parse_config
from pg_sync_assets.engine import ConfigError, Mode, TableRef, TableSpec, sync_table
from pg_sync_assets.engine.compare.localize import localize_table
from pg_sync_assets.engine.verify.verify import compare_table
from pg_sync_assets_tests.support import sessions, table_text

PEOPLE = TableRef("hr", "사람")
COPIED = ["id", "name", "updated_at"]
COPIED_VIEW = TableRef("hr", "copied")  # the source's rows over the copied columns

SEED = """
CREATE SCHEMA hr;
CREATE TABLE hr."사람" (id int PRIMARY KEY, name text NOT NULL, "주민번호" text, email text,
                       updated_at timestamptz NOT NULL);
INSERT INTO hr."사람"
SELECT i, '이름 ' || i, '900101-' || lpad(i::text, 7, '0'), 'p' || i || '@example.com',
       timestamptz '2026-11-01 00:00+00' + i * interval '1 minute'
FROM generate_series(1, 200) AS i;
CREATE VIEW hr.copied AS SELECT id, name, updated_at FROM hr."사람";
"""


@pytest.fixture
def reader(dbs):
    """A source role allowed to read only the copied columns; its connection URL."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    dbs.src(SEED)
    dbs.src(f'CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA hr TO {role}; '
            f'GRANT SELECT (id, name, updated_at) ON hr."사람" TO {role}')
    try:
        yield make_dsn(dbs.source, user=role)
    finally:
        dbs.src(f'REVOKE ALL ON hr."사람" FROM {role}; REVOKE ALL ON SCHEMA hr FROM {role}; DROP ROLE {role}')


def _spec(mode: Mode, **kw) -> TableSpec:
    return TableSpec(name="people", source=PEOPLE, target=PEOPLE, mode=mode, **kw)


def _sync(source_url: str, dbs, spec: TableSpec):
    with sessions(dbs, source_url=source_url) as (source, target):
        return sync_table(spec, source, target)


def _compare(source_url: str, dbs, spec: TableSpec):
    with sessions(dbs, target_readonly=True, source_url=source_url) as (source, target):
        return compare_table(spec, source, target)


def _target_columns(dbs) -> list[str]:
    return [r[0] for r in dbs.tgt(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'hr.\"사람\"'::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum")]


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
@pytest.mark.parametrize("selection", [
    {"columns_exclude": ("주민번호", "email")},
    {"columns_include": ("updated_at", "id", "name")},  # order given does not matter
])
def test_columns_left_out_are_never_read_nor_created(dbs, reader, mode, selection):
    spec = _spec(mode, delete_missing=mode is Mode.MERGE, **selection)

    first = _sync(reader, dbs, spec)
    assert first.created_target and first.target_rows == 200
    assert _target_columns(dbs) == COPIED
    assert table_text(dbs.target, PEOPLE, "id") == _source_rows(dbs)

    # The differential path (compare, copy the changed rows, delete) reads the same columns.
    dbs.src('UPDATE hr."사람" SET name = name || \'!\', "주민번호" = NULL WHERE id <= 10; '
            'DELETE FROM hr."사람" WHERE id > 190')
    second = _sync(reader, dbs, spec)
    assert second.method == "differential"
    assert second.updated == 10
    cmp = _compare(reader, dbs, spec)
    assert cmp.columns == tuple(COPIED)
    assert cmp.checksums_match
    assert table_text(dbs.target, PEOPLE, "id") == _source_rows(dbs, "id <= 190")


def _source_rows(dbs, where: str = "true") -> list[str]:
    """The source's copied columns, rendered as `table_text` renders the target's rows."""
    return table_text(dbs.source, COPIED_VIEW, "id", where)


def test_the_full_copy_and_localization_read_only_the_copied_columns(dbs, reader):
    spec = _spec(Mode.MERGE, columns_exclude=("주민번호", "email"), differential="never")
    _sync(reader, dbs, spec)
    dbs.src('UPDATE hr."사람" SET name = \'바뀜\' WHERE id = 7')
    assert _sync(reader, dbs, spec).method == "merge"
    dbs.tgt('UPDATE hr."사람" SET name = \'틀림\' WHERE id = 8')

    with sessions(dbs, target_readonly=True, source_url=reader) as (source, target):
        diff = localize_table(spec, source, target, rows_hint=200)
    assert (diff.changed, diff.missing, diff.extra) == (["(8)"], [], [])


def test_a_catalog_key_left_out_is_refused_before_anything_is_written(dbs):
    dbs.src(SEED)
    with pytest.raises(ConfigError) as caught:
        _sync(dbs.source, dbs, _spec(Mode.MERGE, columns_exclude=("id",)))
    assert str(caught.value).startswith(
        "plan failed for `hr.사람`: table entry `people`: `columns.exclude` leaves out key column(s) ['id']")
    assert dbs.tgt("SELECT to_regclass('hr.\"사람\"')") == [(None,)]


def test_a_column_the_source_lacks_is_named_with_the_available_ones(dbs):
    dbs.src(SEED)
    with pytest.raises(ConfigError) as caught:
        _sync(dbs.source, dbs, _spec(Mode.MERGE, columns_include=("id", "nmae")))
    assert str(caught.value) == (
        "plan failed for `hr.사람`: table entry `people`: `columns.include` names column(s) ['nmae'] that the source does not "
        "have; available columns: ['id', 'name', '주민번호', 'email', 'updated_at']")


def test_an_existing_target_with_the_left_out_columns_is_still_written(dbs):
    # A target made before the selection keeps its extra columns; they are not touched.
    dbs.src(SEED)
    _sync(dbs.source, dbs, _spec(Mode.MERGE))
    dbs.src('UPDATE hr."사람" SET name = \'새 이름\', email = \'new@example.com\' WHERE id = 3')

    result = _sync(dbs.source, dbs, _spec(Mode.MERGE, columns_exclude=("email",)))

    assert result.updated == 1
    assert dbs.tgt('SELECT name, email FROM hr."사람" WHERE id = 3') == [("새 이름", "p3@example.com")]


@pytest.mark.parametrize(("columns", "extra", "message"), [
    ({"exclude": ["id"]}, {"primary_key": ["id"], "mode": "merge"},
     "`columns.exclude` leaves out key column(s) ['id']: a row cannot be matched without its key"),
    ({"include": ["name"]}, {"primary_key": ["id"], "mode": "merge"},
     "`columns.include` leaves out key column(s) ['id']"),
    ({"exclude": ["email"]}, {"where": "email LIKE '%@example.com'"},
     "`where` uses column(s) ['email'] that `columns.exclude` leaves out"),
    ({"include": ["id"]}, {"where": "t.name <> ''"},
     "`where` uses column(s) ['name'] that `columns.include` leaves out"),
    ({"exclude": ["updated_at"]}, {"mode": "incremental", "incremental_column": "updated_at",
                                   "partition_start": "2026-11-01-00:00", "primary_key": ["id"]},
     "`columns.exclude` leaves out the `incremental_column` 'updated_at'"),
    ({"include": ["id"], "exclude": ["email"]}, {}, "`columns` must be `{include: [column, ...]}`"),
    ({"only": ["id"]}, {}, "`columns` must be `{include: [column, ...]}`"),
    ({"exclude": []}, {}, "`columns.exclude` must be a list of column names, got []"),
    ({"exclude": ["a", "a"]}, {}, "`columns.exclude` lists a column twice"),
])
def test_a_selection_that_cannot_work_fails_at_load(columns, extra, message):
    entry = {"name": "people", "source": "hr.사람", "columns": columns, **extra}
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [entry]})
    assert "table entry 1 (`people`)" in str(caught.value)
    assert message in str(caught.value)


def test_a_selection_loads_into_the_spec():
    (spec,) = parse_config({"tables": [
        {"source": "hr.사람", "target": "hr.사람", "mode": "merge", "columns": {"exclude": ["주민번호"]}}]})
    assert (spec.columns_exclude, spec.columns_include) == (("주민번호",), ())


def test_the_asset_says_which_columns_it_leaves_out():
    from dagster import AssetKey

    from pg_sync_assets import build_defs

    defs = build_defs({"tables": [{"name": "people", "source": "hr.사람", "mode": "merge",
                                   "columns": {"exclude": ["주민번호", "email"]}}]})
    spec = defs.resolve_assets_def(AssetKey("people")).specs_by_key[AssetKey("people")]
    assert spec.metadata["columns.exclude"] == "주민번호, email"
    assert "Never reads nor copies the columns `주민번호`, `email`." in spec.description
