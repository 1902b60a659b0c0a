"""Opening sessions: one place decides read-only mode and application_name.

Errors are re-raised without the DSN: libpq's own message names host and port but
never the password, and that is all the caller gets to see.
"""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from .errors import PgSyncError

DEFAULT_APPLICATION_NAME = "pg_sync_assets"


class ConnectionFailed(PgSyncError):
    """The server could not be reached or refused the login."""


def describe_dsn(dsn: str) -> str:
    """`user@host:port/dbname` for messages: never the password or other options."""
    try:
        p = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "an unparsable connection string"
    return f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"


def connect(
    dsn: str, *, readonly: bool, application_name: str = DEFAULT_APPLICATION_NAME, role: str = "database"
):
    """A new psycopg2 connection; `readonly` sessions cannot write anything."""
    options = "-c default_transaction_read_only=on" if readonly else None
    try:
        full = make_dsn(dsn, application_name=application_name, options=options)
        conn = psycopg2.connect(full)
    except psycopg2.ProgrammingError as exc:
        raise ConnectionFailed(
            f"the {role} connection string is invalid ({type(exc).__name__}); check "
            "PG_SYNC_SOURCE_URL / PG_SYNC_TARGET_URL or the resource fields"
        ) from None
    except psycopg2.OperationalError as exc:
        raise ConnectionFailed(
            f"cannot connect to the {role} database {describe_dsn(dsn)}: "
            f"{str(exc).strip()}; check host, port, firewall and that the server runs"
        ) from None
    if readonly:
        conn.set_session(readonly=True)
    return conn
