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
