"""The table list's SQL may read, never act, on either server: a `where` or `query` that
could call anything volatile is refused at plan time, before any of it is sent; and a
run that says the target is unchanged has proven it."""

from __future__ import annotations

import pytest

from pg_sync_assets.engine import ConfigError, Mode, SyncError, TableRef, TableSpec
from pg_sync_assets.engine.run.context import final_transaction
from pg_sync_assets.engine.run.stages import UNCHANGED
from pg_sync_assets_tests.support import compare, localize, run_reconcile, run_sync, sessions

ORDERS = TableRef("public", "orders")
SEED = """
CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, total numeric(10,2));
INSERT INTO orders SELECT i, CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'new' END, i FROM generate_series(1, 20) i;
CREATE TABLE pwned (n int);
CREATE SEQUENCE counter;
CREATE FUNCTION write_pwned() RETURNS boolean LANGUAGE sql VOLATILE
    AS 'INSERT INTO pwned VALUES (1) RETURNING true';
CREATE FUNCTION is_paid(text) RETURNS boolean LANGUAGE sql STABLE AS 'SELECT $1 = ''paid''';
CREATE FUNCTION loud_eq(text, text) RETURNS boolean LANGUAGE plpgsql VOLATILE
    AS 'BEGIN INSERT INTO pwned VALUES (2); RETURN $1 = $2; END';
CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = loud_eq);
CREATE TYPE loud AS (v text);
CREATE FUNCTION to_loud(text) RETURNS loud LANGUAGE plpgsql VOLATILE
    AS 'BEGIN INSERT INTO pwned VALUES (3); RETURN ROW($1)::loud; END';
CREATE CAST (text AS loud) WITH FUNCTION to_loud(text);
"""
# The attack that reached the source before the catalog check: the first statement turns
# standard_conforming_strings off, and the next one that embeds the same text reads
# `'a\\'` as an unfinished literal, so the rest runs as statements of its own.
RELEX = (
    "set_config('standard_conforming_strings', 'off', false) IS NOT NULL AND status <> 'a\\' "
    "AND status <> '); COMMIT; BEGIN READ WRITE; INSERT INTO pwned VALUES (9); SELECT 1 WHERE (true'"
)
HOSTILE_WHERE = [
    (RELEX, "set_config"),
    ("set_config('default_transaction_read_only', 'off', false) IS NOT NULL", "set_config"),
    ("pg_catalog.set_config('search_path', 'evil', false) <> ''", "set_config"),
    ("write_pwned()", "write_pwned"),
    ("public.write_pwned() OR true", "write_pwned"),
    ("id < nextval('counter')", "nextval"),
    ("pg_advisory_lock(42) IS NOT NULL", "pg_advisory_lock"),
    ("pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock"),
    ("txid_current() > 0", "txid_current"),
    ("pg_current_xact_id() IS NOT NULL", "pg_current_xact_id"),
    ("pg_sleep(0) IS NULL", "pg_sleep"),
    ("pg_notify('c', 'x') IS NULL", "pg_notify"),
    ("random() < 2", "random"),
    ("clock_timestamp() > '2000-01-01'", "clock_timestamp"),
    ("id IN (SELECT 1 FROM generate_series(1, 2) WHERE write_pwned())", "write_pwned"),
    ("EXISTS (SELECT FROM (SELECT set_config('a.b', 'c', false)) s)", "set_config"),
    ("(SELECT lo_import('/etc/passwd')) IS NOT NULL", "lo_import"),
    ("pg_read_file('/etc/hostname') <> ''", "pg_read_file"),
    ("pg_terminate_backend(0)", "pg_terminate_backend"),
    ("status === 'paid'", "==="),
    ("status OPERATOR(public.===) 'paid'", "==="),
    ("(status::loud).v = 'paid'", "loud"),
    ("CAST(status AS public.loud) IS NOT NULL", "loud"),
    ("no_such_function(id)", "does not exist"),
]
HOSTILE_QUERY = [
    ("SELECT id, status, total FROM orders WHERE write_pwned()", "write_pwned"),
    ("SELECT id, status, total, set_config('a.b', 'c', false) AS s FROM orders", "set_config"),
    ("SELECT * FROM set_config('standard_conforming_strings', 'off', false)", "set_config"),
    ("WITH w AS (SELECT nextval('counter') AS n) SELECT o.* FROM orders o, w", "nextval"),
    ("SELECT o.* FROM orders o WHERE o.status === 'paid'", "==="),
]


def _spec(**kw) -> TableSpec:
    return TableSpec(**{"name": "orders", "target": ORDERS, "source": ORDERS, **kw})


def _nothing_written(dbs) -> None:
    assert dbs.src("SELECT count(*) FROM pwned") == [(0,)]
    assert dbs.src("SELECT last_value, is_called FROM counter") == [(1, False)]
    assert dbs.tgt("SELECT to_regclass('public.orders') IS NULL") == [(True,)]


@pytest.mark.parametrize(("where", "named"), HOSTILE_WHERE)
def test_a_where_that_could_act_is_refused_before_it_runs(dbs, where, named):
    dbs.src(SEED)
    for run in (run_sync, run_reconcile, compare, localize):
        with pytest.raises(ConfigError) as caught:
            run(dbs, _spec(where=where, mode=Mode.MERGE))
        message = str(caught.value)
        assert "table entry `orders`: `where` calls" in message and named in message
        assert "on the source server" in message
    _nothing_written(dbs)


@pytest.mark.parametrize(("query", "named"), HOSTILE_QUERY)
def test_a_query_that_could_act_is_refused_before_it_runs(dbs, query, named):
    dbs.src(SEED)
    with pytest.raises(ConfigError) as caught:
        run_sync(dbs, TableSpec(name="orders", target=ORDERS, query=query, primary_key=("id",)))
    assert "`query` calls" in str(caught.value) and named in str(caught.value)
    _nothing_written(dbs)


def test_a_where_is_checked_against_the_target_catalog_too(dbs):
    """The same name can be stable on the source and volatile on the target, where the
    `where` narrows the verified scope."""
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE pwned (n int); CREATE FUNCTION is_paid(text) RETURNS boolean LANGUAGE sql "
            "VOLATILE AS 'INSERT INTO pwned VALUES (1) RETURNING $1 = ''paid'''")
    with pytest.raises(ConfigError) as caught:
        run_sync(dbs, _spec(where="is_paid(status)"))
    assert "function `is_paid(text)`, which is volatile" in str(caught.value)
    assert "on the target server" in str(caught.value)
    assert dbs.tgt("SELECT count(*) FROM pwned") == [(0,)]


@pytest.mark.parametrize(
    "where",
    [
        "is_paid(status)",
        "status = ANY ('{paid,new}') AND total BETWEEN 1 AND 100",
        "date_trunc('day', now()) > '2000-01-01' AND extract(year FROM now()) > 2000",
        "lower(status) LIKE 'p%' OR coalesce(nullif(status, ''), 'x') IS DISTINCT FROM 'y'",
        "total::int4 > 3 AND id::text <> '' AND status ~ '^p' AND current_setting('TimeZone') <> ''",
    ],
)
def test_a_where_of_stable_and_immutable_calls_runs(dbs, where):
    dbs.src(SEED)
    # A `where` narrows the target's scope too: the function must exist there as well.
    dbs.tgt("CREATE FUNCTION is_paid(text) RETURNS boolean LANGUAGE sql STABLE AS 'SELECT $1 = ''paid'''")
    result = run_sync(dbs, _spec(where=where))
    expected = dbs.src(f"SELECT count(*) FROM orders WHERE {where}")[0][0]
    assert result.target_rows == expected and result.verification.final.rows == expected


def test_a_commit_inside_the_final_transaction_is_caught_and_not_called_unchanged(dbs):
    """What a `where` could once inject into the target's last transaction: a COMMIT. The
    run must refuse to commit again, and must not say the target is unchanged."""
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE probe (n int)")
    with sessions(dbs) as (source, target):
        source.set_session(readonly=True, autocommit=False)
        with source.cursor() as scur, target.cursor() as tcur:
            with pytest.raises(SyncError) as caught:
                with final_transaction(scur, tcur, "public.orders") as final:
                    tcur.execute("INSERT INTO probe VALUES (1); COMMIT; BEGIN; INSERT INTO probe VALUES (2)")
                    final.commit()
    message = str(caught.value)
    assert "no longer in the transaction the run opened" in message
    assert UNCHANGED not in message and "may have changed" in message
    assert dbs.tgt("SELECT n FROM probe") == [(1,)]


def test_an_error_after_a_hidden_commit_is_reworded(dbs):
    """A failure whose wording says the target is unchanged is checked against the
    server: the transaction the run opened had committed."""
    dbs.src(SEED)
    dbs.tgt("CREATE TABLE probe (n int)")
    with sessions(dbs) as (source, target):
        with source.cursor() as scur, target.cursor() as tcur:
            with pytest.raises(SyncError) as caught:
                with final_transaction(scur, tcur, "public.orders"):
                    tcur.execute("INSERT INTO probe VALUES (1); COMMIT")
                    raise SyncError("public.orders", "verify", f"rows differ; rolled back: {UNCHANGED}")
            assert UNCHANGED not in str(caught.value) and "may have changed" in str(caught.value)
            with pytest.raises(SyncError) as honest:
                with final_transaction(scur, tcur, "public.orders"):
                    tcur.execute("INSERT INTO probe VALUES (2)")
                    raise SyncError("public.orders", "verify", f"rows differ; rolled back: {UNCHANGED}")
            assert UNCHANGED in str(honest.value)
    assert dbs.tgt("SELECT n FROM probe") == [(1,)]


def test_a_failed_statement_in_the_final_transaction_still_says_unchanged(dbs):
    dbs.src(SEED)
    run_sync(dbs, _spec())
    dbs.tgt("ALTER TABLE orders ADD CONSTRAINT small CHECK (total < 15) NOT VALID")
    dbs.src("UPDATE orders SET total = 99 WHERE id = 1")
    with pytest.raises(SyncError) as caught:
        run_sync(dbs, _spec(mode=Mode.MERGE, differential="never"))
    assert UNCHANGED in str(caught.value)
    assert dbs.tgt("SELECT total FROM orders WHERE id = 1") == [(1,)]


def test_a_refusal_leaves_both_sessions_usable(dbs):
    """A refusal at plan time leaves both sessions usable (the next run works)."""
    dbs.src(SEED)
    with sessions(dbs) as (source, target):
        from pg_sync_assets.engine import sync_table

        with pytest.raises(ConfigError):
            sync_table(_spec(where="write_pwned()"), source, target)
        result = sync_table(_spec(), source, target)
    assert result.target_rows == 20
