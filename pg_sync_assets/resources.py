"""PostgresResource: how the Dagster layer opens sessions to one named connection.

Configured by a libpq URL or field by field; fields set explicitly override the URL's.
Values written `{env: VAR}` in the table list become `EnvVar`s: read when a run starts,
shown in the UI by their variable's name only. The DSN is built here and handed to the
engine; it is never logged, and connection errors carry only `user@host:port/dbname`
and the server's own message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from .connections import NUMBER_FIELDS, Connection, EnvRef
from .engine.connect import DEFAULT_APPLICATION_NAME, build_dsn, connect, describe_dsn


class PostgresResource(ConfigurableResource):
    """One PostgreSQL database; `readonly` makes every session read-only."""

    url: str | None = Field(default=None, description="libpq URI; other fields override its parts")
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    password: str | None = Field(default=None, description="use EnvVar; never logged")
    sslmode: str | None = Field(default=None, description="disable, require, verify-full...")
    connect_timeout: int = 10
    application_name: str = DEFAULT_APPLICATION_NAME
    readonly: bool = False
    role: str = Field(default="database", description="the connection's name, for messages")

    def dsn(self) -> str:
        overrides = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "password": self.password,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
        }
        return build_dsn(self.url or "", self.role, **overrides)

    @contextmanager
    def get_connection(self, purpose: str = "", readonly: bool = False) -> Iterator:
        """A new session, closed on exit; read-only if this resource or the caller says so."""
        name = f"{self.application_name} {purpose}".strip()[:63]
        conn = connect(self.dsn(), readonly=readonly or self.readonly, application_name=name, role=self.role)
        try:
            yield conn
        finally:
            conn.close()


def describe_connection(connection: Connection, readonly: bool) -> str:
    """What the UI's resource page says of a connection: which database, and whether it
    is only read. Values from the environment are named by their variable; a literal URL
    by `user@host:port/dbname` (a password in one is refused at load anyway)."""
    parts = []
    for key, value in connection.values().items():
        if key == "password":
            continue
        if isinstance(value, EnvRef):
            parts.append(f"{key} from ${value.var}")
        elif key == "url":
            parts.append(describe_dsn(value))
        else:
            parts.append(f"{key} {value}")
    use = (
        "read-only: a source, only ever read (read-only sessions and transactions)"
        if readonly
        else "read-write: a target, written by the syncs (final tables and the sync_staging schema)"
    )
    return f"PostgreSQL connection `{connection.name}` ({', '.join(parts)}); {use}."


@cache
def connection_resource(connection: Connection, readonly: bool) -> PostgresResource:
    """The resource of a named connection. The same connection gives the same object, so
    the definitions of several table lists that share a connection merge in Dagster (its
    merge accepts one object per resource key, not equal ones). Dagster describes a
    resource by its class's docstring: each connection gets a subclass of its own that
    says which database it is."""
    fields = {}
    for key, value in connection.values().items():
        if isinstance(value, EnvRef):
            value = EnvVar.int(value.var) if key in NUMBER_FIELDS else EnvVar(value.var)
        fields[key] = value
    described = type(
        "PostgresResource",
        (PostgresResource,),
        {"__doc__": describe_connection(connection, readonly), "__module__": __name__},
    )
    return described(**fields, readonly=readonly, role=connection.name)
