"""`build_defs`: a table list -> Definitions (assets, checks, jobs, schedules, resources).

The one place that assembles the Dagster layer; `definitions.py` (the code location
module) and `TableSyncComponent` both call it. Building opens no connection: the
catalog checks run at the start of each materialization, and in
`python -m pg_sync_assets check`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from dagster import AssetKey, Definitions, ExecutorDefinition

from .assets import build_source_assets, build_table_asset
from .config import load_project, parse_project, parse_yaml
from .executor import EXECUTOR
from .group_assets import build_group_asset
from .launch import ANY_MODULE, Launcher
from .locations import connection_location
from .project import Project
from .resources import connection_resource
from .schedules import build_jobs_and_schedules

TableList = Project | Mapping[str, Any] | Path | os.PathLike | str


def read_table_list(
    tables: TableList, source_name: str | None = None, state_file: Path | None = None
) -> Project:
    """A Project from a Project, a parsed document (a dict), YAML text, or a file path.

    A `str` holding a line break is YAML text; any other `str` is a path. A document's
    pattern entries expand from `state_file` (a file's, from the state file beside it).
    """
    if isinstance(tables, Project):
        return tables
    if isinstance(tables, Mapping):
        return parse_project(dict(tables), source_name or "<table list>", state_file=state_file)
    if isinstance(tables, str) and "\n" in tables:
        name = source_name or "<table list>"
        return parse_project(parse_yaml(tables, name), name)
    return load_project(tables)


def build_defs(
    tables: TableList,
    *,
    source_name: str | None = None,
    executor: ExecutorDefinition | None = EXECUTOR,
    launcher: Launcher = ANY_MODULE,
    owns_source: Callable[[AssetKey], bool] | None = None,
    state_file: Path | None = None,
) -> Definitions:
    """The Definitions of a table list: one asset per table (with its checks), an external
    asset per source table, the jobs and schedules, and one resource per connection used
    (read-only where it is a source). `executor=None` leaves the executor to the
    Definitions this is merged with. `launcher` words the commands that messages print
    for where these definitions load (`launch.py`: the code location module and the
    component set theirs; any other module gets the job's name and both ways).
    `owns_source` says which source tables' external assets these definitions declare
    (default all); the others are only depended on, declared by another instance."""
    project = read_table_list(tables, source_name, state_file)
    located = {name: connection_location(c) for name, c in project.connections.items()}
    project = replace(
        project,
        tables=tuple(
            replace(e, launcher=launcher, target_location=located[e.target_connection])
            for e in project.tables
        ),
    )
    jobs, schedules = build_jobs_and_schedules(project)
    resources = {
        name: connection_resource(project.connections[name], readonly)
        for name, readonly in project.used_connections().items()
    }
    groups: dict[str, list] = {}
    for entry in project.tables:
        if entry.spec.snapshot_group is not None:
            groups.setdefault(entry.spec.snapshot_group, []).append(entry)
    alone = [e for e in project.tables if e.spec.snapshot_group is None]
    return Definitions(
        assets=[
            *(
                spec
                for spec in build_source_assets(list(project.tables))
                if owns_source is None or owns_source(spec.key)
            ),
            *map(build_table_asset, alone),
            *(build_group_asset(group, entries) for group, entries in groups.items()),
        ],
        jobs=jobs,
        schedules=schedules,
        resources=resources,
        executor=executor,
    )
