"""Opening sessions: one place parses connection strings, decides read-only mode and
application_name, and words connection errors.

A connection string holds a password, so no text derived from it leaves this module
unfiltered: libpq's parser quotes the offending token in its messages (for a bad
percent escape or a space in an unquoted value, that token is the password), so a
malformed string is reported by what is wrong, never by its content, and every other
message has the password cut out before it is raised.
"""

from __future__ import annotations

import weakref

import psycopg2
import psycopg2.extras
from psycopg2.extensions import make_dsn, parse_dsn

from .errors import PgSyncError

DEFAULT_APPLICATION_NAME = "pg_sync_assets"
# The row checksum's hash_record_extended (verify.py), and pg_current_xact_id, are 14+.
MIN_SERVER_VERSION = 140000


class ConnectionFailed(PgSyncError):
    """The connection string is malformed, or the server could not be reached or refused the login."""


def _without_quoted_tokens(message: str) -> str:
    """libpq's parser message with everything from its first to its last `"` replaced."""
    text = message.strip().removeprefix("invalid dsn:").strip()
    first, last = text.find('"'), text.rfind('"')
    if first == -1:
        return text
    return (text[:first] + "…" + (text[last + 1 :] if last > first else "")).strip()


def _malformed(role: str, exc: psycopg2.Error) -> ConnectionFailed:
    return ConnectionFailed(
        f"the connection string for `{role}` is malformed ({_without_quoted_tokens(str(exc))}); "
        "check its quoting and percent escapes (a URL needs `%25` for a literal `%`, a key=value "
        "string needs 'single quotes' around a value with spaces)"
    )


# The errors below are raised after their `except` block ends, so that libpq's message
# is not kept as the new exception's __context__ (which tracebacks and Dagster's error
# records would print, password and all).


_URL_SCHEMES = ("postgresql://", "postgres://")
# Fields that end up in `user@host:port/dbname` of messages (and in libpq's own): a URL or
# credentials put there by mistake would be shown whole.
_PLAIN_FIELDS = {"host": "@= ", "hostaddr": "@=/ ", "port": "@=/ ", "dbname": "=", "user": "="}


def _ambiguous(role: str, problem: str) -> ConnectionFailed:
    return ConnectionFailed(
        f"the connection string for `{role}` is malformed ({problem}); the user name and password of a "
        "URL must be percent-encoded (`/` as %2F, `@` as %40, `?` as %3F, `%` as %25), or use the "
        "key=value form or the `password:` field"
    )


def require_unambiguous(dsn: str, role: str) -> None:
    """ConnectionFailed, without the string, when libpq would read a URL otherwise than its
    author meant: libpq ends the user and password at the first `@` or `/`, so a password
    holding an unencoded `/`, `?` or `@` turns into host, port or database name, which
    messages show (and only the password libpq found would be cut out of them)."""
    text = dsn.strip()
    if not text.lower().startswith(_URL_SCHEMES):
        return
    rest = text.split("://", 1)[1]
    stops = [i for i in (rest.find("/"), rest.find("?")) if i != -1]
    authority_end = min(stops) if stops else len(rest)
    if "@" in rest[authority_end:]:
        raise _ambiguous(role, "an `@` after the first `/` or `?` of a URL")
    if rest[:authority_end].count("@") > 1:
        raise _ambiguous(role, "more than one `@` before the host of a URL")


def require_plain_fields(fields: dict[str, str], role: str) -> None:
    """ConnectionFailed, without the value, for a host, port, database or user name that
    holds a URL or credentials (it would be shown in messages as a name)."""
    for key, forbidden in _PLAIN_FIELDS.items():
        value = fields.get(key)
        if value and ("://" in value or any(ch in value for ch in forbidden)):
            raise ConnectionFailed(
                f"the connection for `{role}` is malformed (its `{key}` holds a URL, credentials or "
                "characters a name cannot have); put a connection URL in `url`, and a password only "
                "in `password` or the URL's environment variable"
            )


def parse_connection_string(dsn: str, role: str) -> dict[str, str]:
    """libpq's reading of `dsn`; ConnectionFailed, never echoing the string, if it is
    malformed or could be read two ways (`require_unambiguous`)."""
    require_unambiguous(dsn, role)
    try:
        parts = parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        error = _malformed(role, exc)
    except UnicodeDecodeError:  # a percent escape that is not UTF-8, as %ff
        error = _ambiguous(role, "a percent escape that does not decode as UTF-8")
    else:
        require_plain_fields(parts, role)
        return parts
    raise error


def build_dsn(dsn: str, role: str, **overrides) -> str:
    """`dsn` with `overrides` (None values ignored) set; checked as `parse_connection_string` does."""
    parse_connection_string(dsn, role)
    require_plain_fields({k: str(v) for k, v in overrides.items() if v is not None}, role)
    try:
        return make_dsn(dsn, **{k: v for k, v in overrides.items() if v is not None})
    except psycopg2.ProgrammingError as exc:
        error = _malformed(role, exc)
    raise error


def describe_dsn(dsn: str) -> str:
    """`user@host:port/dbname` for messages: never the password or other options."""
    try:
        p = parse_dsn(dsn)
    except (psycopg2.ProgrammingError, UnicodeDecodeError):
        return "an unparsable connection string"
    return f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"


def redact(text: str, dsn: str) -> str:
    """`text` with the password of `dsn` (if any) cut out."""
    try:
        password = parse_dsn(dsn).get("password")
    except (psycopg2.ProgrammingError, UnicodeDecodeError):
        return text
    return text.replace(password, "***") if password else text


def connect(
    dsn: str,
    *,
    readonly: bool,
    application_name: str = DEFAULT_APPLICATION_NAME,
    role: str = "database",
    factory=None,
):
    """A new psycopg2 connection; `readonly` sessions cannot write anything."""
    # The table list's SQL was checked by a parser that reads backslashes the standard way.
    options = "-c standard_conforming_strings=on"
    if readonly:
        options += " -c default_transaction_read_only=on"
    full = build_dsn(dsn, role, application_name=application_name, options=options)
    try:
        conn = psycopg2.connect(full, connection_factory=factory)
    except psycopg2.Error as exc:
        error = ConnectionFailed(
            redact(
                f"cannot connect to the {role} database {describe_dsn(dsn)}: "
                f"{str(exc).strip()}; check host, port, firewall and that the server runs",
                dsn,
            )
        )
    else:
        if conn.server_version < MIN_SERVER_VERSION:
            conn.close()
            raise ConnectionFailed(
                f"the {role} database {describe_dsn(dsn)} runs PostgreSQL {conn.server_version // 10000}; "
                f"pg_sync_assets needs {MIN_SERVER_VERSION // 10000} or later (its row checksum uses "
                "hash_record_extended); upgrade the server"
            )
        if readonly and factory is None:
            conn.set_session(readonly=True)
        _opened[conn] = (dsn, role)
        return conn
    raise error


# The connection string of each session `connect` opened, for `monitor_session` (libpq
# keeps no password it would give back). Weak: it goes with its session.
_opened: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def monitor_session(conn):
    """A new read-only session to the server and database of `conn`, for reading its
    progress views while `conn` works; None for a session `connect` did not open."""
    if conn not in _opened:
        return None
    dsn, role = _opened[conn]
    monitor = connect(dsn, readonly=True, application_name=f"{DEFAULT_APPLICATION_NAME} progress", role=role)
    monitor.autocommit = True
    return monitor


def sibling_session(conn, readonly: bool, purpose: str = "copy worker"):
    """A new session like `conn` (same server, database and role), for a parallel worker
    (or another `purpose`); `conn` must have been opened by `connect`."""
    dsn, role = _opened[conn]
    name = f"{DEFAULT_APPLICATION_NAME} {purpose}"
    return connect(dsn, readonly=readonly, application_name=name, role=role)


def replication_session(conn):
    """A logical replication session (`replication=database`) like `conn`, for commands
    such as CREATE_REPLICATION_SLOT; the role needs REPLICATION (or the managed service's
    equivalent) and pg_hba.conf must allow it."""
    dsn, role = _opened[conn]
    name = f"{DEFAULT_APPLICATION_NAME} snapshot"
    return connect(
        dsn,
        readonly=False,
        application_name=name,
        role=role,
        factory=psycopg2.extras.LogicalReplicationConnection,
    )
