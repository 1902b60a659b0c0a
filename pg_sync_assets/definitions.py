"""The only wiring: table list -> assets, checks, jobs and resources -> `defs`.

When definitions load, the table list is parsed (bad entries fail the load with a
message naming the file, the entry and the key) and, if `PG_SYNC_SOURCE_URL` is set and
the source answers, every entry is checked against the source catalog (missing table
or column, merge without key). If the source cannot be reached, loading goes on with a
warning and the same checks run at the start of each materialization.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dagster import (
    Definitions,
    EnvVar,
)

from .assets import SOURCE_RESOURCE, TARGET_RESOURCE, build_table_asset
from .checks import build_table_checks
from .config import config_path, load_project
from .engine import ConfigError, ConnectionFailed, TableSpec, connect, plan_table
from .engine.connect import build_dsn
from .resources import PostgresResource
from .schedules import build_jobs_and_schedules

SOURCE_URL_ENV = "PG_SYNC_SOURCE_URL"
TARGET_URL_ENV = "PG_SYNC_TARGET_URL"
VALIDATE_ENV = "PG_SYNC_VALIDATE_ON_LOAD"
LOAD_CONNECT_TIMEOUT = 5

_log = logging.getLogger("pg_sync_assets")


def validate_against_source(specs: list[TableSpec], source_dsn: str, config_file: str) -> None:
    """Raise ConfigError for the first entry the source catalog rejects."""
    # A short timeout: an unreachable source must not stall loading the code location.
    dsn = build_dsn(source_dsn, "source", connect_timeout=LOAD_CONNECT_TIMEOUT)
    conn = connect(dsn, readonly=True, application_name="pg_sync_assets validate", role="source")
    try:
        with conn.cursor() as cur:
            for spec in specs:
                try:
                    plan_table(cur, spec)
                except ConfigError as exc:
                    raise ConfigError(f"`{config_file}`, {exc}") from None
                conn.rollback()
    finally:
        conn.close()


def _validate_on_load(specs: list[TableSpec], config_file: str) -> None:
    dsn = os.environ.get(SOURCE_URL_ENV)
    if not dsn or os.environ.get(VALIDATE_ENV, "auto") == "off":
        return
    try:
        validate_against_source(specs, dsn, config_file)
    except ConnectionFailed as exc:
        _log.warning(
            "table list not checked against the source catalog (%s); the checks "
            "run again when each asset materializes",
            exc,
        )


def build_definitions(config_file: Path | str | None = None) -> Definitions:
    path = str(config_file or config_path())
    specs, settings = load_project(path)
    _validate_on_load(specs, path)
    jobs, schedules = build_jobs_and_schedules(specs, settings)
    return Definitions(
        assets=[build_table_asset(spec) for spec in specs],
        asset_checks=[build_table_checks(spec) for spec in specs],
        jobs=jobs,
        schedules=schedules,
        resources={
            SOURCE_RESOURCE: PostgresResource(url=EnvVar(SOURCE_URL_ENV), readonly=True, role="source"),
            TARGET_RESOURCE: PostgresResource(url=EnvVar(TARGET_URL_ENV), role="target"),
        },
    )


defs = build_definitions()
