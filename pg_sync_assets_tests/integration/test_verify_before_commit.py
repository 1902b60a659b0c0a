"""Verification inside the load: a difference never reaches a committed final table."""

from __future__ import annotations

import time

import psycopg2
import pytest

from pg_sync_assets.engine import Mode, SyncError, TableRef, TableSpec, VerificationError
from pg_sync_assets.engine.run import sync as sync_module
from pg_sync_assets.engine.compare.differential import FROM_CHANGES
from pg_sync_assets.engine.verify.guard import on_source_meanwhile
from pg_sync_assets_tests.support import (
    compare,
    run_sync,
    sessions,
    staging_tables,
    table_text,
    writing_meanwhile,
)

ITEMS = TableRef("public", "items")

# A target-side trigger that alters every row written to the final table: the kind of
# silent change (a bad trigger, a rule, a wrong default) the final comparison must catch.
CORRUPT_FINAL = """
CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.note := NEW.note || '!'; RETURN NEW; END $$;
CREATE TRIGGER corrupt BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION corrupt();
"""

# The same for every staging table created from now on (an event trigger adds a row
# trigger to each new table in sync_staging): the staged comparison must catch it.
CORRUPT_STAGING = """
CREATE FUNCTION corrupt_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.note := upper(NEW.note); RETURN NEW; END $$;
CREATE FUNCTION add_corruption() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE obj record;
BEGIN
  FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
             WHERE schema_name = 'sync_staging' AND command_tag = 'CREATE TABLE' LOOP
    EXECUTE format('CREATE TRIGGER corrupt BEFORE INSERT ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION corrupt_row()', obj.object_identity);
  END LOOP;
END $$;
CREATE EVENT TRIGGER corrupt_staging ON ddl_command_end EXECUTE FUNCTION add_corruption();
"""


def _seed(dbs, rows: int = 300) -> None:
    dbs.src("CREATE TABLE items (id int PRIMARY KEY, note text); "
            f"INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, {int(rows)}) AS i")


def _spec(mode: Mode, **kw) -> TableSpec:
    return TableSpec(name="items", target=ITEMS, source=ITEMS, mode=mode, **kw)


@pytest.mark.parametrize("mode", [Mode.MERGE, Mode.FULL_REFRESH])
def test_final_rows_that_differ_from_the_snapshot_are_rolled_back(dbs, mode):
    _seed(dbs)
    run_sync(dbs, _spec(mode))
    before = table_text(dbs.target, ITEMS, "id")
    dbs.tgt(CORRUPT_FINAL)
    dbs.src("UPDATE items SET note = 'changed' WHERE id <= 5")

    with pytest.raises(VerificationError) as caught:
        run_sync(dbs, _spec(mode))

    message = str(caught.value)
    assert message.startswith("verify failed for `public.items`: final table rows differ from the "
                              "source snapshot that was copied: source 300 rows, checksum ")
    assert "rolled back: the target table is unchanged" in message
    assert table_text(dbs.target, ITEMS, "id") == before
    assert staging_tables(dbs.target) == []


def test_staged_rows_that_differ_from_the_snapshot_are_blamed_on_the_copy(dbs):
    _seed(dbs)
    # An existing (empty) target takes the staged path; a first load copies straight in.
    dbs.tgt("CREATE TABLE items (id int PRIMARY KEY, note text)")
    dbs.tgt(CORRUPT_STAGING)
    try:
        with pytest.raises(VerificationError) as caught:
            run_sync(dbs, _spec(Mode.MERGE))
    finally:
        dbs.tgt("DROP EVENT TRIGGER corrupt_staging")
    assert "staged rows differ from the source snapshot" in str(caught.value)
    assert "rolled back: the target table is unchanged" in str(caught.value)
    assert dbs.tgt("SELECT count(*) FROM items") == [(0,)]
    assert staging_tables(dbs.target) == []


def test_the_source_checksum_is_cancelled_when_the_write_fails_first(dbs):
    """The source is summed on a worker thread while the target merges; a failed merge
    does not wait for it: its statement is cancelled on the source server."""
    with sessions(dbs) as (source, _target), source.cursor() as scur:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="the merge failed"):
            with on_source_meanwhile(scur, scur.execute, "SELECT pg_sleep(60)") as sums:
                time.sleep(0.5)  # the sleep is running on the source
                raise RuntimeError("the merge failed")
        assert time.monotonic() - started < 30
        with pytest.raises(psycopg2.errors.QueryCanceled):
            sums.result()
        source.rollback()
        scur.execute("SELECT 1")  # the session is usable again
        assert scur.fetchone() == (1,)


@pytest.mark.parametrize("mode", [Mode.MERGE, Mode.FULL_REFRESH])
def test_a_failed_source_sum_during_the_merge_rolls_the_merge_back(dbs, mode, monkeypatch):
    """The source is summed on a worker thread while the target merges: its failure
    surfaces once the merge is done, and the final transaction is rolled back."""
    _seed(dbs)
    run_sync(dbs, _spec(mode))
    before = table_text(dbs.target, ITEMS, "id")
    dbs.src("UPDATE items SET note = 'changed' WHERE id <= 5")

    def failing_sum(scur, *args):
        scur.execute("SELECT 1 / 0")

    monkeypatch.setattr(sync_module, "full_copy_sums", failing_sum)
    with pytest.raises(SyncError) as caught:
        run_sync(dbs, _spec(mode, differential="never"))

    assert caught.value.stage == "verify_source" and caught.value.side == "source"
    assert "division by zero" in str(caught.value)
    assert "the target table is unchanged" in str(caught.value)
    assert table_text(dbs.target, ITEMS, "id") == before
    assert staging_tables(dbs.target) == []


def test_verification_can_be_switched_off(dbs):
    _seed(dbs)
    run_sync(dbs, _spec(Mode.MERGE))
    dbs.tgt(CORRUPT_FINAL)
    dbs.src("UPDATE items SET note = 'changed' WHERE id = 1")

    result = run_sync(dbs, _spec(Mode.MERGE, verify=False))

    assert result.verification is None and result.updated == 1
    assert dbs.tgt("SELECT note FROM items WHERE id = 1") == [("changed!",)]


@pytest.mark.parametrize(("differential", "scope"), [
    ("never", "target rows with staged keys"),
    ("auto", f"target scope without the 10 rows only in the target, {FROM_CHANGES}"),
])
def test_merge_keeps_rows_gone_from_the_source_and_reports_them(dbs, differential, scope):
    _seed(dbs)
    run_sync(dbs, _spec(Mode.MERGE))
    dbs.src("DELETE FROM items WHERE id > 290")

    result = run_sync(dbs, _spec(Mode.MERGE, differential=differential))

    assert result.verification.final_scope == scope
    assert result.verification.final.rows == 290
    assert result.verification.rows_only_in_target == 10


def test_writes_on_a_busy_source_cause_no_false_alarm(dbs):
    _seed(dbs, rows=200_000)
    run_sync(dbs, _spec(Mode.MERGE))
    with writing_meanwhile(
        dbs.src,
        "UPDATE items SET note = note || '.' WHERE id = %s; "
        "INSERT INTO items VALUES (%s, 'new') ON CONFLICT (id) DO NOTHING; DELETE FROM items WHERE id = %s",
        lambda n: (n % 1000 + 1, 200_000 + n, 1000 + n),
    ) as writer:
        results = [run_sync(dbs, _spec(mode)) for mode in (Mode.MERGE, Mode.FULL_REFRESH, Mode.MERGE)]

    assert writer.count > 20, "the writer did not overlap the syncs"
    assert all(r.verification.final == r.verification.source for r in results)
    run_sync(dbs, _spec(Mode.FULL_REFRESH))  # the source is quiet now
    assert compare(dbs, _spec(Mode.FULL_REFRESH)).checksums_match


# Writers that change rows the sync inserted after its INSERT has produced them (so a
# checksum of the INSERT's RETURNING rows would miss them): the final comparison reads
# the table as it will be committed, and catches them.
AFTER_WRITERS = {
    "after trigger": """
        CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE items SET note = note || '?' WHERE id = NEW.id AND id <= 3; RETURN NULL; END $$;
        CREATE TRIGGER bump AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION bump()""",
    "rule": "CREATE RULE bump AS ON INSERT TO items DO ALSO "
            "UPDATE items SET note = 'ruled' WHERE id = NEW.id AND id <= 3",
    "before trigger writing another row": """
        CREATE FUNCTION other() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE items SET note = 'touched' WHERE id = NEW.id - 1 AND id <= 3; RETURN NEW; END $$;
        CREATE TRIGGER other BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION other()""",
}


def test_rows_the_target_stores_differently_from_the_staged_rows_are_caught(dbs):
    # A `query` column has no typmod, so numeric passes the schema check against the
    # target's numeric(12,1), which rounds 1.25 to 1.3 on insert: the staged rows match
    # the source, only the rows as stored show it.
    dbs.src("CREATE TABLE prices (id int PRIMARY KEY, amount numeric(12,2)); "
            "INSERT INTO prices SELECT i, i + 0.25 FROM generate_series(1, 50) AS i")
    dbs.tgt("CREATE TABLE items (id int PRIMARY KEY, amount numeric(12,1))")
    spec = TableSpec(name="items", target=ITEMS, query="SELECT id, amount::numeric AS amount FROM prices",
                     primary_key=("id",), mode=Mode.FULL_REFRESH)

    with pytest.raises(VerificationError) as caught:
        run_sync(dbs, spec)

    assert "final table rows differ from the source snapshot" in str(caught.value)
    assert dbs.tgt("SELECT count(*) FROM items") == [(0,)]


@pytest.mark.parametrize("writer", sorted(AFTER_WRITERS))
def test_a_trigger_or_rule_that_rewrites_inserted_rows_is_caught_by_reading_the_table(dbs, writer):
    _seed(dbs)
    run_sync(dbs, _spec(Mode.FULL_REFRESH))
    before = table_text(dbs.target, ITEMS, "id")
    dbs.tgt(AFTER_WRITERS[writer])
    dbs.src("UPDATE items SET note = 'changed' WHERE id <= 5")

    with pytest.raises(VerificationError) as caught:
        run_sync(dbs, _spec(Mode.FULL_REFRESH, differential="never"))

    assert "final table rows differ from the source snapshot" in str(caught.value)
    assert table_text(dbs.target, ITEMS, "id") == before
