"""What a table list becomes: connections, table entries (an engine `TableSpec` plus how
the table shows in Dagster) and schedule settings. Pure data, built by `config.py`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from .automation import Automation, Freshness
from .connections import SOURCE, TARGET, Connection
from .engine.cdc.feed import Feed
from .engine.plan.spec import Mode, TableRef, TableSpec
from .launch import ANY_MODULE, Launcher


@dataclass(frozen=True)
class Retries:
    """`retries:`: how often a failed materialization is tried again, and how soon."""

    max_retries: int
    delay: float = 30.0  # seconds before the first retry
    backoff: str = "exponential"  # or `linear`: the delay grows 2^n or n times


@dataclass(frozen=True)
class ScheduleSettings:
    """The top-level `schedules:` block."""

    running: bool = False  # do schedules start running when the code location is deployed?
    minute_of_hour: int = 7  # incremental tables: the tick at HH:07 loads the hour before
    daily_cron: str = "0 2 * * *"  # full_refresh and merge tables without their own `schedule`
    cdc_cron: str = "*/5 * * * *"  # cdc tables: one job a source connection, `cdc_<connection>`


@dataclass(frozen=True)
class TableEntry:
    """One table of the list: what the engine syncs, through which connections, and how
    its asset is named, grouped, owned and retried."""

    spec: TableSpec
    source_connection: str = SOURCE
    target_connection: str = TARGET
    key_prefix: tuple[str, ...] = ()
    group: str | None = None  # None: the target connection's name
    owners: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    retries: Retries | None = None
    automation: Automation | None = None  # `automation_condition` (`automation.py`)
    freshness: Freshness | None = None
    list_name: str | None = None  # the list's top-level `name:`, which prefixes job names
    # `mode: cdc`: the source connection's slot and publication, and every cdc table that
    # shares them (target connection, target table): the slot moves as all have applied.
    feed: Feed | None = None
    feed_members: tuple[tuple[str, TableRef], ...] = ()
    # How the commands its messages print launch a job (`launch.py`), set by `build_defs`.
    launcher: Launcher = ANY_MODULE
    # (host, port, database) of the target connection when known at load (`locations.py`).
    target_location: tuple | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key_path(self) -> tuple[str, ...]:
        return (*self.key_prefix, self.spec.name)

    @property
    def ident(self) -> str:
        """The asset's op name, and the stem of its job names: unique wherever its key is."""
        return "__".join(self.key_path)

    @property
    def group_name(self) -> str:
        return self.group or self.target_connection

    @property
    def code_version(self) -> str:
        """A digest of everything that decides what a sync does: it changes exactly when
        the table's definition does (the description, owners and tags do not count)."""
        # The lag threshold only decides a check: not part of what a sync does.
        settings = {k: v for k, v in asdict(self.spec).items() if k not in ("window", "cdc_max_lag_mb")}
        settings["connections"] = [self.source_connection, self.target_connection]
        text = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Project:
    tables: tuple[TableEntry, ...]
    connections: Mapping[str, Connection]
    schedules: ScheduleSettings = ScheduleSettings()
    name: str | None = None  # prefixes the names of the list's jobs and schedules

    @property
    def specs(self) -> list[TableSpec]:
        return [entry.spec for entry in self.tables]

    def used_connections(self) -> dict[str, bool]:
        """Connection name -> read-only (True for sources), in order of first use."""
        used: dict[str, bool] = {}
        for entry in self.tables:
            used.setdefault(entry.source_connection, True)
            used.setdefault(entry.target_connection, False)
        return used


def with_feeds(entries: list[TableEntry], connections: Mapping[str, Connection]) -> list[TableEntry]:
    """`entries`, each `cdc` one with its connection's feed and the feed's member tables."""
    members: dict[str, list[tuple[str, TableRef]]] = {}
    for entry in entries:
        if entry.spec.mode is Mode.CDC:
            member = (entry.target_connection, entry.spec.target)
            members.setdefault(entry.source_connection, []).append(member)
    return [
        replace(
            entry,
            feed=connections[entry.source_connection].feed,
            feed_members=tuple(members[entry.source_connection]),
        )
        if entry.spec.mode is Mode.CDC
        else entry
        for entry in entries
    ]
