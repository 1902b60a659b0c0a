"""Where a target table lives, for Dagster's standard metadata: `dagster/table_name`
fully qualified (`database.schema.table`) and a `dagster/uri` that names the server,
database and table and never a credential (no user, no password, no options)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

import psycopg2
from psycopg2.extensions import parse_dsn

from .connections import Connection
from .engine import PgSyncError, TableRef


def table_name(dbname: str, table: TableRef) -> str:
    return f"{dbname}.{table.schema}.{table.name}"


def table_uri(host: str | None, port: int | str | None, dbname: str, table: TableRef) -> str:
    where = quote(host or "localhost", safe="") + (f":{port}" if port else "")
    path = "/".join(quote(part, safe="") for part in (dbname, table.schema, table.name))
    return f"postgresql://{where}/{path}"


def session_location(conn) -> tuple[str, int, str]:
    """(host, port, database) of an open session, as libpq reports them."""
    info = conn.info
    return info.host, info.port, info.dbname


def connection_location(connection: Connection, environ: Mapping[str, str] = os.environ):
    """(host, port, database) of a connection without opening it, when its settings (and
    the environment now) tell them; else None."""
    try:
        parts = parse_dsn(connection.dsn(environ))
    except (PgSyncError, psycopg2.Error):  # a variable unset at load, a string libpq refuses
        return None
    if not parts.get("dbname"):
        return None
    return parts.get("host"), parts.get("port"), parts["dbname"]


def location_metadata(location, table: TableRef) -> dict:
    if location is None:
        return {}
    host, port, dbname = location
    return {
        "dagster/table_name": table_name(dbname, table),
        "dagster/uri": table_uri(host, port, dbname, table),
    }
