"""Named connections: the table list's `connections:` mapping, parsed and resolved.

A connection is a `url:` (libpq URI or key=value string) and/or the fields `host`,
`port`, `dbname`, `user`, `password`, `sslmode`, `connect_timeout` (fields override the
URL's parts). Any value may be `{env: VAR}`, read when a session opens, never shown.
A password may only come from the environment: a literal one in the YAML would be
shown by the Dagster UI's resource page and kept in every copy of the file, so a
literal `password:`, or a `url:` that holds one, is refused at load.

Without a `connections:` entry of that name, `source` is `{url: {env: PG_SYNC_SOURCE_URL}}`
and `target` is `{url: {env: PG_SYNC_TARGET_URL}}`. Pure: no Dagster import, no
connection opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .engine.cdc.feed import Feed, check_slot_name
from .engine.connect import build_dsn, parse_connection_string, require_plain_fields
from .engine.errors import ConfigError, PgSyncError
from .naming import VALID_NAME

SOURCE, TARGET = "source", "target"
SOURCE_URL_ENV, TARGET_URL_ENV = "PG_SYNC_SOURCE_URL", "PG_SYNC_TARGET_URL"
TEXT_FIELDS = ("host", "dbname", "user", "password", "sslmode")
NUMBER_FIELDS = ("port", "connect_timeout")
# `mode: cdc` tables: the names of the connection's replication slot and publication.
FEED_KEYS = ("cdc_slot", "cdc_publication")
CONNECTION_KEYS = ("url", *TEXT_FIELDS, *NUMBER_FIELDS, *FEED_KEYS)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EnvRef:
    """`{env: VAR}`: a value read from the environment when it is needed."""

    var: str


@dataclass(frozen=True)
class Connection:
    name: str
    url: str | EnvRef | None = None
    host: str | EnvRef | None = None
    port: int | EnvRef | None = None
    dbname: str | EnvRef | None = None
    user: str | EnvRef | None = None
    password: EnvRef | None = None
    sslmode: str | EnvRef | None = None
    connect_timeout: int | EnvRef | None = None
    cdc_slot: str | None = None
    cdc_publication: str | None = None

    def values(self) -> dict[str, Any]:
        """The connection fields that are set, `url` included."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("name", *FEED_KEYS) and getattr(self, f.name) is not None
        }

    @property
    def feed(self) -> Feed:
        """The replication slot and publication of this connection's `cdc` tables."""
        default = Feed.default(self.name)
        return Feed(self.name, self.cdc_slot or default.slot, self.cdc_publication or default.publication)

    def dsn(self, environ: Mapping[str, str] = os.environ) -> str:
        """The connection string, environment variables read now. ConfigError naming the
        connection and the variable when one is unset; never the values."""
        resolved = {}
        for key, value in self.values().items():
            if isinstance(value, EnvRef):
                if not environ.get(value.var):
                    raise ConfigError(
                        f"connection `{self.name}`: `{key}` comes from the environment variable "
                        f"{value.var}, which is not set; set it"
                    )
                value = environ[value.var]
            resolved[key] = value
        url = resolved.pop("url", None) or ""
        return build_dsn(url, self.name, **resolved)


DEFAULTS = {
    SOURCE: Connection(SOURCE, url=EnvRef(SOURCE_URL_ENV)),
    TARGET: Connection(TARGET, url=EnvRef(TARGET_URL_ENV)),
}


def parse_connections(raw: Any, where: str) -> dict[str, Connection]:
    """The `connections:` mapping, plus the defaults `source` and `target` it does not redefine."""
    if raw is None:
        return dict(DEFAULTS)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}, `connections`: expected a mapping of name -> {{url: ...}} or fields")
    parsed = {name: _parse_one(name, value, f"{where}, connection `{name}`") for name, value in raw.items()}
    return {**DEFAULTS, **parsed}


def _parse_one(name: Any, raw: Any, where: str) -> Connection:
    if not isinstance(name, str) or not VALID_NAME.match(name):
        raise ConfigError(
            f"{where}: a connection name is a Dagster resource key: use only letters A-Z, a-z, digits and _"
        )
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected `url:` and/or the fields {list(CONNECTION_KEYS[1:])}")
    unknown = sorted(set(raw) - set(CONNECTION_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(CONNECTION_KEYS)}")
    feed = {key: check_slot_name(raw[key], f"{where}, `{key}`") for key in FEED_KEYS if key in raw}
    values = {key: _value(key, value, where) for key, value in raw.items() if key not in FEED_KEYS}
    if "password" in values and not isinstance(values["password"], EnvRef):
        raise ConfigError(
            f"{where}: a password is never written in the table list (the Dagster UI shows "
            "resource settings, and files get copied); use `password: {env: VARIABLE}`"
        )
    literal = {k: v for k, v in values.items() if isinstance(v, str) and k != "url"}
    try:
        require_plain_fields(literal, name)
    except PgSyncError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    url = values.get("url")
    if isinstance(url, str):
        try:
            parts = parse_connection_string(url, name)
        except PgSyncError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if parts.get("password"):
            raise ConfigError(
                f"{where}: the `url` holds a password; put the URL in an environment variable "
                "(`url: {env: VARIABLE}`) or the password alone (`password: {env: VARIABLE}`)"
            )
    return Connection(name, **values, **feed)


def _value(key: str, value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) != {"env"}:
            raise ConfigError(
                f"{where}: `{key}` must be a value or {{env: VARIABLE_NAME}}; the mapping has the "
                f"key(s) {sorted(map(str, value))}, and `env` is the only one allowed"
            )
        if not isinstance(value["env"], str) or not ENV_NAME.match(value["env"]):
            raise ConfigError(
                f"{where}: `{key}: {{env: ...}}` needs the name of an environment variable "
                f"(letters, digits and _, not starting with a digit), got {value['env']!r}"
            )
        return EnvRef(value["env"])
    if key in NUMBER_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise ConfigError(f"{where}: `{key}` must be a whole number above 0, got {value!r}")
        return value
    if not isinstance(value, str) or not value.strip():
        # The value is not echoed: under a misspelt key it could be a secret.
        raise ConfigError(f"{where}: `{key}` must be a non-empty string or {{env: VARIABLE_NAME}}")
    if key == "sslmode" and value not in SSL_MODES:
        raise ConfigError(f"{where}: `sslmode` is {value!r}; allowed: {', '.join(SSL_MODES)}")
    return value


def check_roles(connections: Mapping[str, Connection], uses: list[tuple[str, str, str]], where: str) -> None:
    """`uses` is (table name, source connection, target connection) per table: each named
    connection exists, and none serves as a source and a target (sources are read-only)."""
    role_of: dict[str, tuple[str, str]] = {}
    for table, source, target in uses:
        for conn, role in ((source, SOURCE), (target, TARGET)):
            if conn not in connections:
                defined = sorted(set(connections) - set(DEFAULTS)) or ["(none)"]
                raise ConfigError(
                    f"{where}, table entry `{table}`: `{role}_connection` names `{conn}`, which "
                    f"`connections:` does not define (defined: {', '.join(defined)}; `source` and "
                    "`target` exist by default)"
                )
            seen_role, seen_table = role_of.setdefault(conn, (role, table))
            if seen_role != role:
                raise ConfigError(
                    f"{where}: connection `{conn}` is the {seen_role} of `{seen_table}` and the {role} "
                    f"of `{table}`; a connection is used for reading or for writing, never both "
                    "(sources are opened read-only): define a second connection to that database"
                )
