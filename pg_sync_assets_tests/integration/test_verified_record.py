"""The verified record (`engine/record.py`): a run trusts the target's recorded checksum
only while no one has written the target since, and any write, by any path, sends it
back to hashing the target live and repairing what differs."""

from __future__ import annotations

import psycopg2
import pytest

from pg_sync_assets.engine import Mode, TableRef, TableSpec
from pg_sync_assets.engine.merge import DIFFERENTIAL
from pg_sync_assets_tests.support import run_sync, table_text

ITEMS = TableRef("public", "품목")
SEED = (
    'CREATE TABLE "품목" (id int PRIMARY KEY, note text, price numeric(8,2));'
    "INSERT INTO \"품목\" SELECT i, 'n' || i, i / 10.0 FROM generate_series(1, 500) AS i"
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
    dbs.src("UPDATE \"품목\" SET note = 'changed' WHERE id = 7")
    third = run_sync(dbs, spec)
    assert third.method == DIFFERENTIAL and third.updated == 1
    assert _in_sync(dbs)
    assert RECORDED in run_sync(dbs, spec).verification.final_scope


# Writes by someone else after a verified run. Each must void the record: the next run
# hashes the target live, finds the difference, and puts the source's rows back. Several
# keep the count, one even keeps every value, so only the row versions can tell.
TARGET_WRITES = {
    "update": "UPDATE \"품목\" SET note = 'tampered' WHERE id = 3",
    "update to the same value": "UPDATE \"품목\" SET note = note WHERE id = 3",
    "insert": "INSERT INTO \"품목\" VALUES (9001, 'stray', 1)",
    "delete": 'DELETE FROM "품목" WHERE id = 4',
    "delete and insert back": "DELETE FROM \"품목\" WHERE id = 5; "
    "INSERT INTO \"품목\" VALUES (5, 'n5-other', 0.5)",
    "truncate and reload": 'CREATE TEMP TABLE keep AS SELECT * FROM "품목"; TRUNCATE "품목"; '
    "INSERT INTO \"품목\" SELECT id, CASE WHEN id = 6 THEN 'x' ELSE note END, price FROM keep",
    "update in a subtransaction": "BEGIN; SAVEPOINT s; UPDATE \"품목\" SET note = 'sub' WHERE id = 10; "
    "RELEASE s; COMMIT",
    "dropped and created again": 'CREATE TABLE copy AS SELECT * FROM "품목"; DROP TABLE "품목"; '
    'ALTER TABLE copy RENAME TO "품목"; ALTER TABLE "품목" ADD PRIMARY KEY (id); '
    "UPDATE \"품목\" SET note = 'y' WHERE id = 8",
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
    dbs.tgt('VACUUM FULL "품목"')
    dbs.tgt('CLUSTER "품목" USING "품목_pkey"')
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
            dbs.src("UPDATE \"품목\" SET note = 'new' WHERE id = 1")
            recording = run_sync(dbs, spec)  # writes, and records with its own, newer id
            assert recording.method == DIFFERENTIAL and recording.updated == 1
            cur.execute("UPDATE \"품목\" SET note = 'late' WHERE id = 9")
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
    dbs.src("UPDATE \"품목\" SET note = note || '+' WHERE id BETWEEN 1 AND 400")
    run_sync(dbs, _spec(verify=False))  # a full copy (most rows differ), not verified
    dbs.src("UPDATE \"품목\" SET note = rtrim(note, '+') WHERE id BETWEEN 1 AND 400")

    back = run_sync(dbs, _spec())

    assert RECORDED not in back.verification.final_scope and _in_sync(dbs)


def test_a_scoped_merge_is_compared_live(dbs):
    """A `where` scope's count is not the table's: such targets are never recorded."""
    dbs.src(SEED)
    spec = _spec(Mode.MERGE, where="id <= 300")
    run_sync(dbs, spec)
    assert LIVE in run_sync(dbs, spec).verification.final_scope
    assert dbs.tgt("SELECT count(*) FROM sync_staging.verified_tables")[0][0] == 0
