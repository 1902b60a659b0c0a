"""Pattern entries (`source: shop.*`): `check` lists the matching tables from the source
catalog into the state file beside the table list, loading expands each pattern from it
(no connection), and every table syncs and checks as if listed by hand."""

from __future__ import annotations

import json

import psycopg2
import pytest
from dagster import AssetKey, DagsterInstance

from pg_sync_assets.__main__ import main as cli_main
from pg_sync_assets.config import load_project, parse_project
from pg_sync_assets.definitions import build_definitions
from pg_sync_assets.engine import ConfigError, TableRef
from pg_sync_assets.patterns import _like, state_path
from pg_sync_assets_tests.support import point_definitions_at, table_text, writing_meanwhile

# A small pagila-like schema: enums, a domain, arrays, tsvector, a partitioned table with
# its partitions, views, foreign keys with CASCADE and RESTRICT; plus tables the pattern
# must leave out.
PAGILA = """
CREATE SCHEMA film;
CREATE TYPE film.rating AS ENUM ('G', 'PG', 'PG-13', 'R');
CREATE DOMAIN film.year AS integer CHECK (VALUE BETWEEN 1900 AND 2100);
CREATE TABLE film.language (language_id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE film.film (
    film_id int PRIMARY KEY, title text NOT NULL, release_year film.year, rating film.rating,
    language_id int NOT NULL REFERENCES film.language ON DELETE RESTRICT,
    special_features text[], fulltext tsvector);
CREATE TABLE film.actor (actor_id int PRIMARY KEY, "이름" text NOT NULL);
CREATE TABLE film.film_actor (actor_id int REFERENCES film.actor ON DELETE CASCADE,
                              film_id int REFERENCES film.film ON DELETE CASCADE,
                              PRIMARY KEY (actor_id, film_id));
CREATE TABLE film.payment (payment_id int, paid_at date NOT NULL, amount numeric(6,2),
                           PRIMARY KEY (payment_id, paid_at)) PARTITION BY RANGE (paid_at);
CREATE TABLE film.payment_2026_10 PARTITION OF film.payment FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE film.payment_2026_11 PARTITION OF film.payment FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE film.audit_log (id int PRIMARY KEY, note text);
CREATE VIEW film.film_list AS SELECT film_id, title FROM film.film;
CREATE TABLE other_schema (id int PRIMARY KEY);
INSERT INTO film.language VALUES (1, 'English'), (2, '한국어');
INSERT INTO film.film SELECT i, 'Film ' || i, 2000 + i % 20, (ARRAY['G','PG','PG-13','R'])[1 + i % 4]::film.rating,
       1 + i % 2, ARRAY['Trailers', 'Deleted Scenes'], to_tsvector('simple', 'film number ' || i)
FROM generate_series(1, 50) AS i;
INSERT INTO film.actor SELECT i, '배우 ' || i FROM generate_series(1, 20) AS i;
INSERT INTO film.film_actor SELECT 1 + i % 20, i FROM generate_series(1, 50) AS i;
INSERT INTO film.payment SELECT i, date '2026-10-15' + (i % 30), i * 0.5 FROM generate_series(1, 60) AS i;
INSERT INTO film.audit_log VALUES (1, 'x');
"""

CONFIG = """\
tables:
  - source: film.*
    exclude: [film.audit_*]
    target: backup.*
    mode: full_refresh
"""

SYNCED = ["actor", "film", "film_actor", "language", "payment"]


@pytest.fixture
def project(dbs, tmp_path, monkeypatch):
    return point_definitions_at(dbs, tmp_path, monkeypatch, PAGILA, CONFIG)


def _check(path, capsys) -> tuple[int, str]:
    status = cli_main(["check", "--config", str(path)])
    return status, capsys.readouterr().out


def test_check_lists_the_pattern_and_loading_expands_it_without_a_connection(project, dbs, capsys, monkeypatch):
    status, out = _check(project, capsys)
    assert status == 0, out
    assert out.splitlines()[0] == "pattern film.* (source): 5 tables"
    assert "ok      payment: source `film.payment` -> target `backup.payment`" in out
    state = json.loads(state_path(project).read_text())
    assert list(state["patterns"].values()) == [{"tables": [["film", t] for t in SYNCED]}]

    def refuse(*args, **kwargs):
        raise AssertionError("loading connected to a database")

    monkeypatch.setattr(psycopg2, "connect", refuse)
    names = sorted(e.name for e in load_project(project).tables)
    assert names == SYNCED
    monkeypatch.undo()


def test_every_table_of_the_pattern_syncs_and_checks(project, dbs, capsys):
    assert _check(project, capsys)[0] == 0
    defs = build_definitions()
    result = defs.resolve_job_def("sync_all").execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 2 * len(SYNCED) and all(c.passed for c in checks)
    for name in SYNCED:
        assert table_text(dbs.target, TableRef("backup", name), _first_column(name)) == table_text(
            dbs.source, TableRef("film", name), _first_column(name)), name
    assert defs.resolve_assets_def(AssetKey("film")).specs_by_key[AssetKey("film")].metadata[
        "dagster/table_name"].endswith(".backup.film")


def _first_column(name: str) -> str:
    return {"film_actor": "film_id", "payment": "payment_id", "language": "language_id"}.get(name, f"{name}_id")


def test_a_new_source_table_appears_after_the_next_check(project, dbs, capsys):
    assert _check(project, capsys)[0] == 0
    dbs.src("CREATE TABLE film.category (category_id int PRIMARY KEY); DROP TABLE film.film_actor")

    assert sorted(e.name for e in load_project(project).tables) == SYNCED  # not yet
    status, out = _check(project, capsys)

    assert out.splitlines()[0] == "pattern film.* (source): 5 tables; new: film.category; gone: film.film_actor"
    assert status == 0
    assert sorted(e.name for e in load_project(project).tables) == ["actor", "category", "film", "language",
                                                                      "payment"]


def test_views_only_when_asked(project, dbs, capsys):
    project.write_text(CONFIG.replace("mode: full_refresh", "mode: full_refresh\n    include_views: true"))
    assert _check(project, capsys)[0] == 0
    assert "film_list" in {e.name for e in load_project(project).tables}


def test_a_pattern_not_listed_yet_fails_the_load_with_the_command_to_run(project):
    with pytest.raises(ConfigError) as caught:
        load_project(project)
    assert str(caught.value) == (
        f"`{project}`, table entry 1 (`film.*`): the tables of pattern `film.*` have not been listed yet; "
        f"run `python -m pg_sync_assets check` (it reads the source catalog and writes "
        f"`{state_path(project)}`), then load again")


def test_a_changed_pattern_must_be_listed_again(project, capsys):
    assert _check(project, capsys)[0] == 0
    project.write_text(CONFIG.replace("[film.audit_*]", "[film.audit_*, film.actor]"))
    with pytest.raises(ConfigError, match="have not been listed yet"):
        load_project(project)


@pytest.mark.parametrize(("entry", "message"), [
    ({"source": "film.*", "name": "x"}, "['name'] cannot be set on a pattern"),
    ({"source": "*"}, "a pattern `source` is `schema.table` with `*` or `?`"),
    ({"source": "film.*", "target": "backup.films"}, "the `target` of a pattern is `schema.*`"),
    ({"source": "film.*", "exclude": "film.a"}, "`exclude` must be a list of `schema.table` patterns"),
    ({"source": "film.*", "include_views": "yes"}, "`include_views` must be true or false"),
    ({"source": "film.a", "exclude": ["film.b"]}, "unknown key(s) ['exclude']"),
])
def test_bad_pattern_entries_fail_at_load(entry, message, tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_project({"tables": [entry]}, state_file=tmp_path / "none.json")
    assert message in str(caught.value)


@pytest.mark.parametrize(("glob", "like"), [
    ("order_*", "order\\_%"), ("a?c", "a_c"), ("100%", "100\\%"), ("상품*", "상품%"), ("back\\slash", "back\\\\slash"),
])
def test_globs_become_like_patterns_with_the_rest_literal(glob, like):
    assert _like(glob) == like


def test_a_pattern_in_one_snapshot_group_keeps_foreign_keys_with_a_writer_on_the_source(project, dbs, capsys):
    project.write_text(CONFIG + "    snapshot_group: film\n")
    assert _check(project, capsys)[0] == 0
    defs = build_definitions()
    instance = DagsterInstance.ephemeral()
    assert defs.resolve_job_def("sync_all").execute_in_process(instance=instance).success
    # the target's foreign keys, as `pg_dump -s` would have made them
    dbs.tgt("ALTER TABLE backup.film ADD FOREIGN KEY (language_id) REFERENCES backup.language ON DELETE RESTRICT;"
            "ALTER TABLE backup.film_actor ADD FOREIGN KEY (film_id) REFERENCES backup.film ON DELETE RESTRICT;"
            "ALTER TABLE backup.film_actor ADD FOREIGN KEY (actor_id) REFERENCES backup.actor ON DELETE CASCADE")
    runs = []
    with writing_meanwhile(
        dbs.src,
        "INSERT INTO film.language VALUES (%s, 'l'); "
        "INSERT INTO film.film (film_id, title, language_id) VALUES (%s, 'f', %s); "
        "INSERT INTO film.actor VALUES (%s, 'a'); INSERT INTO film.film_actor VALUES (%s, %s); "
        "DELETE FROM film.film WHERE film_id = %s; DELETE FROM film.language WHERE language_id = %s",
        lambda n: (n, n, n, n, n, n, n - 3, n - 3),
        start=1000,
    ) as writer:
        while (len(runs) < 3 or writer.count < 10) and len(runs) < 30 and writer.alive:
            runs.append(defs.resolve_job_def("sync_all").execute_in_process(instance=instance, raise_on_error=False))

    assert writer.count >= 10, "the writer did not overlap the runs"
    for run in runs:
        assert run.success, [e.message for e in run.all_events if e.is_failure]
        assert {e.step_key for e in run.all_events if e.event_type_value == "STEP_SUCCESS"} == {
            "snapshot_group_film"}
        assert all(c.passed for c in run.get_asset_check_evaluations())


def test_every_schema_with_excludes(project, dbs, capsys):
    project.write_text("tables:\n  - source: '*.*'\n    exclude: [public.*, film.audit_*, film.payment]\n"
                       "    target: backup.*\n")
    status, out = _check(project, capsys)
    assert status == 0, out
    assert out.splitlines()[0] == "pattern *.* (source): 4 tables"
    assert sorted(e.spec.source.name for e in load_project(project).tables) == ["actor", "film", "film_actor",
                                                                                 "language"]


def test_a_pattern_excludes_a_column_wherever_it_occurs_and_refuses_a_typo(dbs, tmp_path, monkeypatch, capsys):
    """A schema-wide personal-data rule: `ssn` is left out of the tables that have it, the
    others sync whole; a name no matched table has is a typo, refused by `check`."""
    seed = """
    CREATE SCHEMA crm;
    CREATE TABLE crm.person (id int PRIMARY KEY, name text, ssn text);
    CREATE TABLE crm.employee (id int PRIMARY KEY, person_id int, ssn text, salary int);
    CREATE TABLE crm.region (id int PRIMARY KEY, label text);
    INSERT INTO crm.person VALUES (1, 'a', '123-45'); INSERT INTO crm.employee VALUES (1, 1, '999', 10);
    INSERT INTO crm.region VALUES (1, 'north');
    """
    path = point_definitions_at(dbs, tmp_path, monkeypatch, seed,
                                "tables:\n  - source: crm.*\n    columns: {exclude: [ssn]}\n")
    status, out = _check(path, capsys)
    assert status == 0, out
    defs = build_definitions()
    result = defs.resolve_job_def("sync_all").execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    columns = dbs.tgt("SELECT table_name, string_agg(column_name, ',' ORDER BY ordinal_position) "
                      "FROM information_schema.columns WHERE table_schema = 'crm' GROUP BY 1 ORDER BY 1")
    assert columns == [("employee", "id,person_id,salary"), ("person", "id,name"), ("region", "id,label")]

    path.write_text("tables:\n  - source: crm.*\n    columns: {exclude: [ssn, snn]}\n", encoding="utf-8")
    status, out = _check(path, capsys)
    assert status == 2
    assert "pattern `crm.*`: `columns` names ['snn'], which none of its 3 tables has" in out
