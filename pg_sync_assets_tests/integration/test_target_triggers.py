"""Triggers a target brings along (`pg_dump -s` copies pagila's `last_updated`): they
fire on the rows the sync writes, verification names them, and `target_triggers:
disable` writes the rows as the source has them, with the triggers off only inside the
run's final transaction."""

from __future__ import annotations

import pytest

from pg_sync_assets.engine import Mode, TableRef, TableSpec, VerificationError
from pg_sync_assets.engine.run.group import sync_group
from pg_sync_assets_tests.support import run_sync, sessions, table_text

COUNTRY = TableRef("public", "country")
DDL = """
CREATE TABLE country (country_id int PRIMARY KEY, country text NOT NULL,
                      last_update timestamptz NOT NULL DEFAULT now());
"""
# pagila's trigger, as `pg_dump -s` writes it into the target
TRIGGERS = """
CREATE FUNCTION last_updated() RETURNS trigger LANGUAGE plpgsql AS
  'BEGIN NEW.last_update = CURRENT_TIMESTAMP; RETURN NEW; END';
CREATE TRIGGER last_updated BEFORE UPDATE ON country FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER always_on AFTER INSERT ON country FOR EACH ROW EXECUTE FUNCTION shout();
ALTER TABLE country ENABLE ALWAYS TRIGGER always_on;
CREATE TRIGGER already_off AFTER INSERT ON country FOR EACH ROW EXECUTE FUNCTION shout();
ALTER TABLE country DISABLE TRIGGER already_off;
"""
SEED = DDL + """
INSERT INTO country SELECT i, 'country ' || i, timestamptz '2020-02-15 09:45:25+00' FROM generate_series(1, 50) i;
"""
CHANGE = "UPDATE country SET country = 'renamed', last_update = '2021-01-01 00:00:00+00' WHERE country_id = 7"
# Paths that update rows (a full refresh without a differential truncates and inserts:
# a BEFORE UPDATE trigger has nothing to rewrite there).
UPDATING = [(Mode.MERGE, "auto"), (Mode.MERGE, "never"), (Mode.FULL_REFRESH, "auto")]
CASES = [*UPDATING, (Mode.FULL_REFRESH, "never")]


def _spec(mode: Mode, differential: str, **kw) -> TableSpec:
    return TableSpec(name="country", source=COUNTRY, target=COUNTRY, mode=mode, differential=differential, **kw)


def _trigger_states(dbs) -> list[tuple]:
    return dbs.tgt("SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = 'country'::regclass "
                   "AND NOT tgisinternal ORDER BY 1")


def _synced_then_changed(dbs, mode, differential) -> list[str]:
    dbs.src(SEED)
    dbs.tgt(DDL + TRIGGERS)
    run_sync(dbs, _spec(mode, differential))  # inserts: the BEFORE UPDATE trigger does not fire
    dbs.src(CHANGE)
    return table_text(dbs.target, COUNTRY, "country_id")


@pytest.mark.parametrize(("mode", "differential"), UPDATING)
def test_a_trigger_that_rewrites_rows_is_named_when_verification_fails(dbs, mode, differential):
    before = _synced_then_changed(dbs, mode, differential)
    with pytest.raises(VerificationError) as caught:
        run_sync(dbs, _spec(mode, differential))
    message = str(caught.value)
    assert "final table rows differ" in message
    assert "trigger(s) `always_on` (AFTER INSERT, for each row), `last_updated` (BEFORE UPDATE, for each row)" \
        in message
    assert "set `target_triggers: disable` for this table" in message
    assert message.endswith("rolled back: the target table is unchanged")
    assert table_text(dbs.target, COUNTRY, "country_id") == before


@pytest.mark.parametrize(("mode", "differential"), CASES)
def test_target_triggers_disable_writes_the_source_rows_and_keeps_each_trigger_as_it_was(dbs, mode, differential):
    _synced_then_changed(dbs, mode, differential)
    states = _trigger_states(dbs)
    assert states == [("already_off", "D"), ("always_on", "A"), ("last_updated", "O")]
    result = run_sync(dbs, _spec(mode, differential, target_triggers="disable"))
    assert result.updated == 1 or mode is Mode.FULL_REFRESH
    assert table_text(dbs.target, COUNTRY, "country_id") == table_text(dbs.source, COUNTRY, "country_id")
    assert _trigger_states(dbs) == states
    dbs.tgt("UPDATE country SET country = 'by hand' WHERE country_id = 1")  # it still fires for others
    assert dbs.tgt("SELECT last_update > now() - interval '1 minute' FROM country WHERE country_id = 1") == [(True,)]


def test_a_failed_run_with_triggers_disabled_leaves_them_enabled(dbs):
    _synced_then_changed(dbs, Mode.MERGE, "never")
    states = _trigger_states(dbs)
    dbs.tgt("ALTER TABLE country ADD CONSTRAINT no_renames CHECK (country <> 'renamed') NOT VALID")
    with pytest.raises(Exception, match="no_renames"):
        run_sync(dbs, _spec(Mode.MERGE, "never", target_triggers="disable"))
    assert _trigger_states(dbs) == states


def test_a_snapshot_group_member_disables_its_triggers_too(dbs):
    _synced_then_changed(dbs, Mode.MERGE, "never")
    spec = _spec(Mode.MERGE, "auto", target_triggers="disable", snapshot_group="g")
    with sessions(dbs) as (source, target):
        sync_group([spec], source, target)
    assert table_text(dbs.target, COUNTRY, "country_id") == table_text(dbs.source, COUNTRY, "country_id")
    assert ("last_updated", "O") in _trigger_states(dbs)


def test_check_names_the_triggers_and_the_setting(dbs, tmp_path, monkeypatch, capsys):
    from pg_sync_assets.__main__ import main

    dbs.src(SEED)
    dbs.tgt(DDL + TRIGGERS)
    path = tmp_path / "tables.yaml"
    path.write_text("tables:\n  - source: public.country\n    mode: merge\n", encoding="utf-8")
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", dbs.source)
    monkeypatch.setenv("PG_SYNC_TARGET_URL", dbs.target)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target exists, matches; the target table's trigger(s) `always_on`" in out
    assert "set `target_triggers: disable`" in out
    path.write_text("tables:\n  - source: public.country\n    mode: merge\n    target_triggers: disable\n",
                    encoding="utf-8")
    assert main(["check", "--config", str(path)]) == 0
    assert "trigger" not in capsys.readouterr().out
