"""Passes a run can skip, and the proof it may: the verified record (`engine/verify/record.py`)
is trusted only while no one has written the target since, and any write, by any path,
sends the run back to hashing the target live and repairing what differs; a differential
run's final checksum comes from its changes (`engine/verify/delta_verify.py`) only while no
other row was written, else from a full pass that catches the difference."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg2
import pytest

from pg_sync_assets.engine import Mode, TableRef, TableSpec, VerificationError
from pg_sync_assets.engine.run import sync as sync_module
from pg_sync_assets.engine.compare.differential import FROM_CHANGES
from pg_sync_assets.engine.compare.differential import compare as compare_first
from pg_sync_assets.engine.load.merge import DIFFERENTIAL
from pg_sync_assets.engine.plan.plan import plan_table
from pg_sync_assets.engine.run.context import open_snapshot
from pg_sync_assets.engine.verify.buckets import KEY_TEXT, Bucketing
from pg_sync_assets.engine.verify.delta_verify import delta_checksum
from pg_sync_assets.engine.verify.verify import target_checksum
from pg_sync_assets_tests.support import compare, run_sync, sessions, table_text

ITEMS = TableRef("public", "품목 100%")
SEED = (
    'CREATE TABLE "품목 100%" (id int PRIMARY KEY, note text, price numeric(8,2));'
    "INSERT INTO \"품목 100%\" SELECT i, 'n' || i, i / 10.0 FROM generate_series(1, 500) AS i"
)
RECORDED = "no row written since"
LIVE = "compared before any write"


def _spec(mode: Mode = Mode.FULL_REFRESH, **kw) -> TableSpec:
    return TableSpec(name="items", source=ITEMS, target=ITEMS, mode=mode, **kw)


def _in_sync(dbs) -> bool:
    return table_text(dbs.target, ITEMS, "id") == table_text(dbs.source, ITEMS, "id")


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_an_unchanged_target_is_not_hashed_again(dbs, mode):
    dbs.src(SEED)
    spec = _spec(mode, delete_missing=True)
    first = run_sync(dbs, spec)
    assert first.created_target
    second = run_sync(dbs, spec)  # recorded by the first run: compared with the record
    assert RECORDED in second.verification.final_scope
    assert second.verification.final == second.verification.source
    assert (second.rows_copied, second.inserted, second.updated, second.deleted) == (0, 0, 0, 0)
    # the source changes: compared against the record, localized live, repaired, recorded
    dbs.src("UPDATE \"품목 100%\" SET note = 'changed' WHERE id = 7")
    third = run_sync(dbs, spec)
    assert third.method == DIFFERENTIAL and third.updated == 1
    assert _in_sync(dbs)
    assert RECORDED in run_sync(dbs, spec).verification.final_scope


# Writes by someone else after a verified run. Each must void the record: the next run
# hashes the target live, finds the difference, and puts the source's rows back. Several
# keep the count, one even keeps every value, so only the row versions can tell.
TARGET_WRITES = {
    "update": "UPDATE \"품목 100%\" SET note = 'tampered' WHERE id = 3",
    "update to the same value": "UPDATE \"품목 100%\" SET note = note WHERE id = 3",
    "insert": "INSERT INTO \"품목 100%\" VALUES (9001, 'stray', 1)",
    "delete": 'DELETE FROM "품목 100%" WHERE id = 4',
    "delete and insert back": "DELETE FROM \"품목 100%\" WHERE id = 5; "
    "INSERT INTO \"품목 100%\" VALUES (5, 'n5-other', 0.5)",
    "truncate and reload": 'CREATE TEMP TABLE keep AS SELECT * FROM "품목 100%"; TRUNCATE "품목 100%"; '
    "INSERT INTO \"품목 100%\" SELECT id, CASE WHEN id = 6 THEN 'x' ELSE note END, price FROM keep",
    "update in a subtransaction": "BEGIN; SAVEPOINT s; UPDATE \"품목 100%\" SET note = 'sub' WHERE id = 10; "
    "RELEASE s; COMMIT",
    "dropped and created again": 'CREATE TABLE copy AS SELECT * FROM "품목 100%"; DROP TABLE "품목 100%"; '
    'ALTER TABLE copy RENAME TO "품목 100%"; ALTER TABLE "품목 100%" ADD PRIMARY KEY (id); '
    "UPDATE \"품목 100%\" SET note = 'y' WHERE id = 8",
}


@pytest.mark.parametrize("write", TARGET_WRITES.values(), ids=list(TARGET_WRITES))
def test_any_write_to_the_target_voids_the_record(dbs, write):
    dbs.src(SEED)
    spec = _spec()
    run_sync(dbs, spec)
    assert RECORDED in run_sync(dbs, spec).verification.final_scope
    dbs.tgt(write)

    repaired = run_sync(dbs, spec)

    assert RECORDED not in repaired.verification.final_scope
    assert _in_sync(dbs)
    assert RECORDED in run_sync(dbs, spec).verification.final_scope  # recorded again


def test_moving_rows_without_changing_them_keeps_the_record(dbs):
    """VACUUM FULL and CLUSTER rewrite the table but keep each row's version."""
    dbs.src(SEED)
    spec = _spec()
    run_sync(dbs, spec)
    dbs.tgt('VACUUM FULL "품목 100%"')
    dbs.tgt('CLUSTER "품목 100%" USING "품목 100%_pkey"')
    assert RECORDED in run_sync(dbs, spec).verification.final_scope


def test_a_writer_older_than_the_run_is_still_seen(dbs):
    """A transaction that began before the recording run and commits after it writes rows
    with a transaction id below the run's own: the horizon, not the run's id, places them."""
    dbs.src(SEED)
    spec = _spec()
    run_sync(dbs, spec)
    writer = psycopg2.connect(dbs.target)
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT pg_current_xact_id()")  # an id older than the next run's
            dbs.src("UPDATE \"품목 100%\" SET note = 'new' WHERE id = 1")
            recording = run_sync(dbs, spec)  # writes, and records with its own, newer id
            assert recording.method == DIFFERENTIAL and recording.updated == 1
            cur.execute("UPDATE \"품목 100%\" SET note = 'late' WHERE id = 9")
        writer.commit()
    finally:
        writer.close()
    assert not _in_sync(dbs)

    repaired = run_sync(dbs, spec)

    assert RECORDED not in repaired.verification.final_scope
    assert repaired.updated == 1 and _in_sync(dbs)


def test_a_run_without_verification_voids_the_record(dbs):
    """A run that writes without verifying records nothing, and what it wrote voids the
    last record: when the source goes back to the recorded rows, the target is hashed
    live and put back too (trusting the record would call it unchanged)."""
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.src("UPDATE \"품목 100%\" SET note = note || '+' WHERE id BETWEEN 1 AND 400")
    run_sync(dbs, _spec(verify=False))  # a full copy (most rows differ), not verified
    dbs.src("UPDATE \"품목 100%\" SET note = rtrim(note, '+') WHERE id BETWEEN 1 AND 400")

    back = run_sync(dbs, _spec())

    assert RECORDED not in back.verification.final_scope and _in_sync(dbs)


def test_a_scoped_merge_is_compared_live(dbs):
    """A `where` scope's count is not the table's: such targets are never recorded."""
    dbs.src(SEED)
    spec = _spec(Mode.MERGE, where="id <= 300")
    run_sync(dbs, spec)
    assert LIVE in run_sync(dbs, spec).verification.final_scope
    assert dbs.tgt("SELECT count(*) FROM sync_staging.verified_tables")[0][0] == 0


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_the_final_checksum_from_the_changes_is_the_full_passs(dbs, mode):
    dbs.src(SEED)
    spec = _spec(mode, delete_missing=True)
    run_sync(dbs, spec)
    dbs.src("UPDATE \"품목 100%\" SET note = 'changed', price = 1 WHERE id % 50 = 0; "
            "INSERT INTO \"품목 100%\" VALUES (700, 'new', 2), (701, NULL, NULL); "
            "DELETE FROM \"품목 100%\" WHERE id IN (2, 3); UPDATE \"품목 100%\" SET id = 900 WHERE id = 4")

    result = run_sync(dbs, spec)

    assert result.method == DIFFERENTIAL and FROM_CHANGES in result.verification.final_scope
    assert (result.inserted, result.updated, result.deleted) == (3, 10, 3)
    live = compare(dbs, spec)
    assert live.target == result.verification.final == result.verification.source
    assert _in_sync(dbs)


@pytest.mark.parametrize("mode", [Mode.FULL_REFRESH, Mode.MERGE])
def test_recorded_bucket_sums_spare_the_targets_bucket_pass(dbs, mode):
    dbs.src(SEED)
    spec = _spec(mode, delete_missing=True)
    full = replace(spec, differential="never", target=TableRef("public", "full copy"))
    run_sync(dbs, spec)
    run_sync(dbs, full)
    for round_ in range(1, 4):
        dbs.src(f"UPDATE \"품목 100%\" SET note = 'r{round_}' WHERE id % 97 = {round_}; "
                f"DELETE FROM \"품목 100%\" WHERE id = {round_ * 100}; "
                f"INSERT INTO \"품목 100%\" VALUES ({1000 + round_}, 'new', {round_})")
        result = run_sync(dbs, spec)
        run_sync(dbs, full)
        d = result.differential
        # the first changed run follows the first load, a full copy that recorded them too
        assert d.buckets_from_record, d.target_read
        assert result.method == DIFFERENTIAL and (result.inserted, result.deleted) == (1, 1)
        assert _in_sync(dbs)
        assert table_text(dbs.target, ITEMS, "id") == table_text(dbs.target, TableRef("public", "full copy"), "id")


WHOLE = [Mode.FULL_REFRESH, Mode.MERGE]  # the merge with delete_missing: a whole-table copy


@pytest.mark.parametrize("mode", WHOLE)
def test_a_full_copy_records_bucket_sums_for_the_next_run(dbs, mode):
    """The first load sums the source per bucket for its verification, so the next
    changed run reads the target's sums from the record instead of from the target."""
    dbs.src(SEED)
    spec = _spec(mode, delete_missing=True)
    assert run_sync(dbs, spec).created_target
    dbs.src("UPDATE \"품목 100%\" SET note = 'changed' WHERE id = 7")

    result = run_sync(dbs, spec)

    assert result.method == DIFFERENTIAL and result.updated == 1
    assert result.differential.buckets_from_record, result.differential.target_read
    assert _in_sync(dbs)


@pytest.mark.parametrize("mode", WHOLE)
def test_a_fallback_verifies_with_the_comparisons_sums_and_records_them(dbs, mode, monkeypatch):
    """A comparison that finds most buckets differing has summed the source scope in the
    run's snapshot: the full copy it falls back to is verified against those sums (the
    source is not read again) and records them."""
    dbs.src(SEED)
    spec = _spec(mode, delete_missing=True)
    run_sync(dbs, spec)
    dbs.src("UPDATE \"품목 100%\" SET note = note || '!'")  # every bucket differs

    def no_second_pass(*args):
        raise AssertionError("the source was summed again")

    monkeypatch.setattr(sync_module, "full_copy_sums", no_second_pass)
    result = run_sync(dbs, spec)
    monkeypatch.undo()
    dbs.src("UPDATE \"품목 100%\" SET note = 'after' WHERE id = 9")
    after = run_sync(dbs, spec)

    assert result.differential.fell_back and result.rows_copied == 500
    assert result.verification.final == result.verification.source
    assert after.method == DIFFERENTIAL and after.differential.buckets_from_record and after.updated == 1
    assert _in_sync(dbs)


def _load_then_change(dbs, spec: TableSpec):
    """The first load of SEED, a change of one source row, and the run that syncs it."""
    dbs.src(SEED)
    run_sync(dbs, spec)
    dbs.src("UPDATE \"품목 100%\" SET note = 'a' WHERE id = 11")
    return run_sync(dbs, spec)


def test_after_a_change_the_bucket_pass_comes_first_until_a_run_finds_none(dbs):
    spec = _spec()
    _load_then_change(dbs, spec)  # records bucket sums

    first = run_sync(dbs, spec)  # the source's bucket pass, all equal: nothing written
    second = run_sync(dbs, spec)  # the bucket sums were dropped: totals again

    assert first.differential.buckets_from_record and first.differential.buckets_differing == 0
    assert RECORDED in first.verification.final_scope and first.rows_copied == 0
    assert second.differential.buckets == 0 and RECORDED in second.verification.final_scope
    assert _in_sync(dbs)


def test_recorded_bucket_sums_are_void_once_the_target_is_written(dbs):
    spec = _spec()
    assert _load_then_change(dbs, spec).differential.buckets_from_record  # the first load's; records its own
    dbs.tgt("UPDATE \"품목 100%\" SET note = 'tampered' WHERE id = 12")
    dbs.src("UPDATE \"품목 100%\" SET note = 'b' WHERE id = 13")

    result = run_sync(dbs, spec)

    assert not result.differential.buckets_from_record and result.differential.target_read == "hashed live"
    assert result.updated == 2 and _in_sync(dbs)


def test_a_void_record_with_bucket_sums_reads_the_target_per_bucket_once(dbs):
    """A no-op write voids the record: pass 1 reads the target live (no totals first),
    finds every bucket equal, and records anew without sums for the next run's totals."""
    spec = _spec()
    _load_then_change(dbs, spec)  # records bucket sums
    dbs.tgt('UPDATE "품목 100%" SET note = note WHERE id = 12')

    result = run_sync(dbs, spec)
    after = run_sync(dbs, spec)

    d = result.differential
    assert d.buckets > 0 and d.buckets_differing == 0 and d.target_read == "hashed live"
    assert LIVE in result.verification.final_scope and result.rows_copied == 0
    assert after.differential.buckets == 0 and RECORDED in after.verification.final_scope
    assert _in_sync(dbs)


def test_a_merge_that_keeps_extra_rows_records_no_bucket_sums(dbs):
    """Its target holds more than the source scope: the source's sums are not its own."""
    dbs.src(SEED)
    spec = _spec(Mode.MERGE)
    run_sync(dbs, spec)
    dbs.src('DELETE FROM "품목 100%" WHERE id = 5; UPDATE "품목 100%" SET note = \'a\' WHERE id = 6')
    run_sync(dbs, spec)
    dbs.src("UPDATE \"품목 100%\" SET note = 'b' WHERE id = 7")

    result = run_sync(dbs, spec)

    assert not result.differential.buckets_from_record
    assert result.updated == 1 and result.verification.rows_only_in_target == 1


def test_a_target_trigger_is_hashed_in_full_and_caught(dbs):
    """A trigger could write rows the run did not name: no checksum from changes then."""
    dbs.src(SEED)
    spec = _spec()
    run_sync(dbs, spec)
    dbs.tgt("CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "NEW.note := upper(NEW.note); RETURN NEW; END $$; "
            "CREATE TRIGGER shout BEFORE UPDATE ON \"품목 100%\" FOR EACH ROW EXECUTE FUNCTION shout()")
    dbs.src("UPDATE \"품목 100%\" SET note = 'quiet' WHERE id = 20")
    before = table_text(dbs.target, ITEMS, "id")

    with pytest.raises(VerificationError, match="rolled back"):
        run_sync(dbs, spec)

    assert table_text(dbs.target, ITEMS, "id") == before


def test_a_write_during_the_run_sends_it_to_a_full_pass(dbs):
    """Someone updates a row the run does not touch after the comparison read the target
    and before the run writes: the checksum from the changes would miss it; the row
    versions show it, the full pass finds it, and nothing is committed."""
    dbs.src(SEED)
    spec = _spec(lock_attempt_timeout=0.5)
    run_sync(dbs, spec)
    dbs.src("UPDATE \"품목 100%\" SET note = 'changed' WHERE id = 30")
    before = dict(dbs.tgt('SELECT id, note FROM "품목 100%"'))
    blocker = psycopg2.connect(dbs.target)
    outcome: list[BaseException | object] = []

    def sync() -> None:
        try:
            outcome.append(run_sync(dbs, spec))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    try:
        with blocker.cursor() as cur:
            cur.execute('LOCK TABLE "품목 100%" IN SHARE MODE')  # the run's write lock waits
            runner = threading.Thread(target=sync)
            runner.start()
            deadline = time.monotonic() + 60
            while not _waits_for_lock(dbs) and runner.is_alive():
                assert time.monotonic() < deadline, "the run never reached its write lock"
                time.sleep(0.05)
            cur.execute("UPDATE \"품목 100%\" SET note = 'sneaked in' WHERE id = 40")
        blocker.commit()
        runner.join(120)
    finally:
        blocker.close()

    assert isinstance(outcome[0], VerificationError), outcome
    # the other session's update stands; the run committed nothing (id 30 is still old)
    assert dict(dbs.tgt('SELECT id, note FROM "품목 100%"')) == {**before, 40: "sneaked in"}


@pytest.mark.parametrize("stray", [None, "UPDATE \"품목 100%\" SET note = 'stray' WHERE id = 61"])
def test_the_checksum_from_changes_needs_every_written_row_named(dbs, stray):
    """In the run's own transaction, a row written at a key the run did not name (what a
    cascading foreign key or a trigger could do) makes the checksum come from a full pass."""
    dbs.src(SEED)
    spec = _spec()
    run_sync(dbs, spec)
    dbs.src("UPDATE \"품목 100%\" SET note = 'changed' WHERE id = 60")
    with sessions(dbs) as (source, target):
        open_snapshot(source, target)
        target.autocommit = False
        with source.cursor() as scur, target.cursor() as tcur:
            plan = plan_table(scur, spec)
            diff = compare_first(spec, plan, scur, tcur)
            assert diff.changed_count == 1
            tcur.execute("UPDATE \"품목 100%\" SET note = 'changed' WHERE id = 60")  # the named write
            if stray:
                tcur.execute(stray)
            from_changes = delta_checksum(tcur, spec, plan, diff, deleted_extra=True)
            if stray:
                assert from_changes is None
            else:
                assert from_changes == target_checksum(tcur, spec, plan.columns)
            target.rollback()


def _waits_for_lock(dbs) -> bool:
    return dbs.tgt(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '\"품목 100%\"'::regclass"
    )[0][0] > 0


def test_bucket_sums_are_only_read_back_by_the_bucketing_that_summed_them(dbs):
    """An integer key's sums are by blocks; records written before blocks existed hold
    key-text sums under the key's name alone, and must not be read as block sums."""
    spec = _spec()
    _load_then_change(dbs, spec)  # records bucket sums
    assert dbs.tgt("SELECT bucket_key FROM sync_staging.verified_tables") == [
        ('{"by": "integer blocks", "key": ["id"]}',)]
    assert Bucketing(("id",), KEY_TEXT).stored == '["id"]'  # what every record held before
    dbs.tgt("UPDATE sync_staging.verified_tables SET bucket_key = '[\"id\"]'")
    dbs.src("UPDATE \"품목 100%\" SET note = 'b' WHERE id = 12")

    result = run_sync(dbs, spec)

    assert result.method == DIFFERENTIAL and result.updated == 1
    assert not result.differential.buckets_from_record, result.differential.target_read
    assert _in_sync(dbs)
