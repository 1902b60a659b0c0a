"""`where` and `query` from the table list: one expression, one read-only SELECT,
checked by PostgreSQL's parser before anything is sent. No database."""

from __future__ import annotations

import pytest

from pg_sync_assets.config import parse_config
from pg_sync_assets.engine import ConfigError, TableRef, TableSpec
from pg_sync_assets.engine.plan.user_sql import calls, clean_query, clean_where

INJECTION = "true); COMMIT; BEGIN READ WRITE; INSERT INTO t VALUES (1); SELECT 1 FROM t WHERE (true"


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("status = 'paid';", "status = 'paid'"),
        ("status = 'paid' ;  ", "status = 'paid'"),
        ("status = 'paid' -- only the paid ones", "status = 'paid'"),
        ("/* lead */ a = 1 -- x;\n AND b = ';' ; -- end", "a = 1 -- x;\n AND b = ';'"),
        ("note = $$a;b$$ AND tag = E'\\';'", "note = $$a;b$$ AND tag = E'\\';'"),
        ('"상태" = \'결제\'', '"상태" = \'결제\''),
    ],
)
def test_where_keeps_one_condition_without_trailing_semicolons_or_comments(text, cleaned):
    assert clean_where(text) == cleaned


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (INJECTION, "`where` holds a `;` at character 6: it must be one SQL condition"),
        ("true) OR (false", "closes a parenthesis it never opened (character 5)"),
        ("(a = 1", "leaves a parenthesis open"),
        ("a = = 1", "`where` is not valid SQL: syntax error at or near \"=\" (character 5)"),
        ("a = 'open", "`where` is not valid SQL: unterminated quoted string"),
        ("id IN (WITH d AS (DELETE FROM t RETURNING id) SELECT id FROM d)", "`where` contains DELETE"),
        ("-- nothing", "`where` is empty"),
    ],
)
def test_where_that_is_not_one_condition_is_refused(text, message):
    with pytest.raises(ConfigError) as caught:
        clean_where(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT 1; DELETE FROM t", "`query` holds a `;` at character 9: it must be one SELECT statement"),
        ("DELETE FROM t RETURNING *", "`query` must be a SELECT (or VALUES), got Delete"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "`query` contains DELETE"),
        ("WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d", "`query` contains UPDATE"),
        ("SELECT * FROM t FOR UPDATE", "locks rows (FOR UPDATE/SHARE)"),
        ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", "locks rows (FOR UPDATE/SHARE)"),
        ("SELECT * INTO copy_of_t FROM t", "SELECT ... INTO, which creates a table"),
        ("SELEC 1", "`query` is not valid SQL: syntax error at or near \"SELEC\" (character 1)"),
    ],
)
def test_query_that_is_not_one_read_only_select_is_refused(text, message):
    with pytest.raises(ConfigError) as caught:
        clean_query(text)
    assert message in str(caught.value)


def test_query_keeps_its_text_minus_trailing_semicolon_and_comment():
    assert clean_query("SELECT id, total FROM shop.orders; -- all of them\n") == (
        "SELECT id, total FROM shop.orders")
    assert clean_query("VALUES (1, 'a')") == "VALUES (1, 'a')"


def test_the_table_list_names_file_entry_key_and_value():
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [{"source": "shop.orders", "where": INJECTION}]}, source_name="t.yaml")
    message = str(caught.value)
    assert message.startswith("`t.yaml`, table entry 1 (`shop.orders`): `where` holds a `;`")
    assert message.endswith(f"got {INJECTION!r}")


def test_a_spec_built_in_code_is_checked_too():
    with pytest.raises(ConfigError) as caught:
        TableSpec(name="o", target=TableRef("a", "o"), query="SELECT 1; DROP TABLE x")
    assert str(caught.value).startswith("table entry `o`: `query` holds a `;`")


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM ROWS FROM (f((WITH d AS (DELETE FROM t RETURNING 1) SELECT 1 FROM d)))",
        "SELECT * FROM f((WITH d AS (DELETE FROM t RETURNING 1) SELECT 1 FROM d))",
        "SELECT * FROM f() AS x(a int), LATERAL (SELECT * FROM (SELECT 1 FROM t FOR UPDATE) s) y",
    ],
)
def test_writes_nested_in_a_from_function_list_are_found(text):
    """A FROM function is a list of (call, column list) pairs: the walk reaches inside."""
    with pytest.raises(ConfigError, match="contains DELETE|locks rows"):
        clean_query(text)


def test_calls_lists_every_function_operator_and_cast_at_any_depth():
    found = calls(
        condition="a BETWEEN 1 AND 2 AND public.f(x::pg_catalog.int4[]) AND s OPERATOR(s2.===) 'x' "
        "AND EXISTS (SELECT FROM ROWS FROM (set_config('a', 'b', false)) r)",
    )
    assert found.functions == (("public", "f"), (None, "set_config"))
    assert found.operators == (("s2", "==="),)
    assert found.types == (("pg_catalog", "int4"),)
    query = calls(query="SELECT extract(year FROM now()) FROM t WHERE a = ANY (g())")
    assert query.functions == (("pg_catalog", "extract"), (None, "now"), (None, "g"))
    assert query.operators == ((None, "="),)
