"""Malformed connection strings: reported by what is wrong, never by their content."""

from __future__ import annotations

import pytest

from pg_sync_assets.engine import ConnectionFailed, connect
from pg_sync_assets.engine.connect import build_dsn, redact
from pg_sync_assets.resources import PostgresResource
from pg_sync_assets_tests.support import exception_chain_text

SECRET = "Zq9secret"
MALFORMED = [
    pytest.param(f"postgresql://u:Pct%ZZ{SECRET}@h/db", "invalid percent-encoded token", id="bad-percent-escape"),
    pytest.param(f"host=h password=a {SECRET} user=u", "missing … in connection info string", id="space-in-value"),
    pytest.param(f"host=h password='{SECRET}", "unterminated quoted string", id="unterminated-quote"),
    pytest.param(f"postgresql://u:{SECRET}@h/db?bogus=1", "invalid URI query parameter", id="unknown-parameter"),
]


@pytest.mark.parametrize(("dsn", "reason"), MALFORMED)
def test_a_malformed_string_is_named_by_its_fault_not_its_content(dsn, reason):
    with pytest.raises(ConnectionFailed) as caught:
        connect(dsn, readonly=True, role="source")
    message = str(caught.value)
    assert message.startswith("the connection string for `source` is malformed (")
    assert reason in message
    assert SECRET not in exception_chain_text(caught.value)


@pytest.mark.parametrize(("dsn", "reason"), MALFORMED)
def test_the_resource_never_echoes_a_malformed_url(dsn, reason):
    resource = PostgresResource(url=dsn, role="target", connect_timeout=1)
    with pytest.raises(ConnectionFailed) as caught, resource.get_connection("test"):
        pass
    assert SECRET not in exception_chain_text(caught.value)
    assert "`target` is malformed" in str(caught.value)


def test_fields_with_spaces_and_quotes_are_quoted_not_rejected():
    dsn = build_dsn("", "target", host="h", password="a b'c\\d", user="u")
    assert "password='a b\\'c\\\\d'" in dsn


def test_redact_cuts_the_password_out_of_any_text():
    assert redact("boom: s3cr3t here", "postgresql://u:s3cr3t@h/db") == "boom: *** here"
    assert redact("unchanged", "postgresql://u@h/db") == "unchanged"


# Passwords libpq would read, in part, as host, port or database name (or not at all):
# each fragment is distinctive, so a test can prove none of it is ever shown.
FRAGMENTS = ("Pw1x", "Pw2y")
AMBIGUOUS = [
    "postgresql://reader:Pw1x/Pw2y@db.internal/shop",
    "postgresql://reader:Pw1x/Pw2y@db.internal:5432/shop?sslmode=require",
    "postgres://reader:Pw1x@Pw2y@db.internal/shop",
    "postgresql://reader:Pw1x?Pw2y@db.internal/shop",
    "postgresql://reader:Pw1x/@Pw2y@db.internal/shop",
    "postgresql://reader:Pw1x//Pw2y@db.internal",
    "postgresql://reader:Pw1x:Pw2y/x@db.internal/shop",
    "postgresql://reader:Pw1x%ffPw2y@db.internal/shop",
    "postgresql://reader:Pw1x%c3Pw2y@db.internal/shop",
    "  PostgreSQL://reader:Pw1x/Pw2y@db.internal/shop",
    "postgresql://reader@db.internal/shop?password=Pw1x@Pw2y",
    "postgresql://reader:Pw1x@db.internal/postgresql://x:Pw2y@h/db",
    "host=postgresql://reader:Pw1x@Pw2y/db dbname=shop",
    "dbname=postgresql://reader:Pw1x@h/Pw2y",
    "host=h dbname=shop user=x=Pw1xPw2y",
]


def _never_shown(exc: BaseException) -> None:
    text = exception_chain_text(exc)
    assert not any(f in text for f in FRAGMENTS), text


@pytest.mark.parametrize("dsn", AMBIGUOUS)
def test_a_string_libpq_would_read_two_ways_is_refused_before_connecting(dsn):
    with pytest.raises(ConnectionFailed) as caught:
        connect(dsn, readonly=True, role="source")
    assert str(caught.value).startswith(("the connection string for `source` is malformed (",
                                         "the connection for `source` is malformed ("))
    _never_shown(caught.value)


@pytest.mark.parametrize("dsn", AMBIGUOUS)
def test_a_literal_url_libpq_would_read_two_ways_does_not_load(dsn):
    from pg_sync_assets.config import parse_project
    from pg_sync_assets.engine import ConfigError

    document = {"connections": {"shop": {"url": dsn}},
                "tables": [{"source": "public.orders", "source_connection": "shop"}]}
    with pytest.raises(ConfigError) as caught:
        parse_project(document, "t.yaml")
    assert "connection `shop`" in str(caught.value) and "malformed" in str(caught.value)
    _never_shown(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", "postgresql://reader:Pw1x@db/Pw2y"),
        ("host", "reader:Pw1x@Pw2y"),
        ("dbname", "postgresql://reader:Pw1x@db/Pw2y"),
        ("dbname", "host=h password=Pw1xPw2y"),
        ("port", "Pw1x@Pw2y"),
        ("user", "postgresql://reader:Pw1x@Pw2y"),
    ],
)
def test_a_url_or_credentials_in_a_name_field_are_refused_unshown(field, value):
    """Literal in the table list: at load; from the environment: when the session opens."""
    from pg_sync_assets.config import parse_project
    from pg_sync_assets.connections import Connection, EnvRef
    from pg_sync_assets.engine import ConfigError

    document = {"connections": {"shop": {"host": "db", **{field: value}}},
                "tables": [{"source": "public.orders", "source_connection": "shop"}]}
    if field != "port":  # a literal port is a number; the YAML check refuses text there
        with pytest.raises(ConfigError) as caught:
            parse_project(document, "t.yaml")
        _never_shown(caught.value)
    conn = Connection("shop", **{"host": "db", field: EnvRef("SHOP_FIELD")})
    with pytest.raises(ConnectionFailed) as caught:
        conn.dsn({"SHOP_FIELD": value})
    assert f"its `{field}` holds a URL" in str(caught.value)
    _never_shown(caught.value)


def test_a_socket_directory_is_a_host():
    assert "host=/var/run/postgresql" in build_dsn("dbname=shop", "source", host="/var/run/postgresql")


@pytest.mark.parametrize("dsn", AMBIGUOUS[:4] + ["postgresql://reader:%ff@db/shop"])
def test_check_exits_2_for_an_unusable_connection_and_shows_no_part_of_it(dsn, tmp_path, monkeypatch, capsys):
    from pg_sync_assets.__main__ import main

    path = tmp_path / "tables.yaml"
    path.write_text("tables:\n  - source: public.orders\n", encoding="utf-8")
    monkeypatch.setenv("PG_SYNC_SOURCE_URL", dsn)
    monkeypatch.setenv("PG_SYNC_TARGET_URL", "postgresql://writer@127.0.0.1:1/none")
    assert main(["check", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert "malformed" in out and not any(f in out for f in FRAGMENTS), out
