"""The only wiring: table list -> assets, checks, jobs and resources -> `defs`.

When definitions load, the table list is parsed (bad entries fail the load with a
message naming the file, the entry and the key). No connection is opened: a code
location must load while a database is down, and every step process loads it again.
The catalog checks (missing table or column, merge without key, target shape) run at
the start of each materialization, and in `python -m pg_sync_assets check`.
"""

from __future__ import annotations

from pathlib import Path

from dagster import (
    Definitions,
    EnvVar,
)

from .assets import build_source_assets, build_table_asset
from .config import config_path, load_project
from .keys import SOURCE_RESOURCE, TARGET_RESOURCE
from .resources import PostgresResource
from .schedules import build_jobs_and_schedules

SOURCE_URL_ENV = "PG_SYNC_SOURCE_URL"
TARGET_URL_ENV = "PG_SYNC_TARGET_URL"


def build_definitions(config_file: Path | str | None = None) -> Definitions:
    path = str(config_file or config_path())
    specs, settings = load_project(path)
    jobs, schedules = build_jobs_and_schedules(specs, settings)
    return Definitions(
        assets=[*build_source_assets(specs), *(build_table_asset(spec) for spec in specs)],
        jobs=jobs,
        schedules=schedules,
        resources={
            SOURCE_RESOURCE: PostgresResource(url=EnvVar(SOURCE_URL_ENV), readonly=True, role="source"),
            TARGET_RESOURCE: PostgresResource(url=EnvVar(TARGET_URL_ENV), role="target"),
        },
    )


defs = build_definitions()
