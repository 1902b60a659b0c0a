"""`python -m pg_sync_assets check`: every table of the list against both catalogs.

Loading the definitions opens no connection (a code location must load when a database
is down, and every step process re-imports it); the catalog checks run at the start of
each materialization, and here, for deploy pipelines and CI: one line per table, exit
status 1 when any table would fail, 2 when a connection cannot be opened. Each named
connection is opened once (read-only), its environment variables read now.
Plain Python: no Dagster import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass

from .engine import PgSyncError, TableRef, TableSpec, connect
from .engine.cdc.feed import drop_feed, require_logical, slot_status
from .engine.cdc.identity import source_identity
from .engine.load.triggers import FIRE, triggers_advice, user_triggers
from .engine.run.context import preflight
from .project import Project, TableEntry


@dataclass(frozen=True)
class TableReport:
    spec: TableSpec
    problem: str | None  # None: the table can be synced as configured
    detail: str = ""

    def line(self) -> str:
        if self.problem is None:
            return f"ok      {self.spec.name}: {self.detail}"
        return f"FAILED  {self.spec.name}: {self.problem}"


def check_project(project: Project, environ: Mapping[str, str] = os.environ) -> list[TableReport]:
    """One report per table; PgSyncError if a connection cannot be opened."""
    with ExitStack() as stack:
        sessions = {}
        for name in project.used_connections():
            conn = connect(
                project.connections[name].dsn(environ),
                readonly=True,
                application_name="pg_sync_assets check",
                role=name,
            )
            stack.callback(conn.close)
            sessions[name] = conn
        return [
            _check_one(e, sessions[e.source_connection], sessions[e.target_connection])
            for e in project.tables
        ]


def _check_one(entry: TableEntry, source, target) -> TableReport:
    spec = entry.spec
    source.rollback()
    target.rollback()
    try:
        with source.cursor() as scur, target.cursor() as tcur:
            plan, target_cols, changes = preflight(scur, tcur, spec)
            fired = user_triggers(tcur, spec.target) if target_cols and spec.target_triggers == FIRE else []
            if entry.feed is not None:
                require_feed_rights(scur, spec, plan)
    except PgSyncError as exc:
        return TableReport(spec, str(exc))
    finally:
        source.rollback()
        target.rollback()
    origin = f"{entry.source_connection} " + (f"`{spec.source}`" if spec.source else "query")
    key = ", ".join(plan.key) or "no key"
    state = "exists, matches" if target_cols else "will be created"
    if changes:
        state = "exists; the next run will: " + "; ".join(c.description for c in changes)
    if fired:
        state += "; " + triggers_advice(fired)
    target_text = f"{entry.target_connection} `{spec.target}`"
    return TableReport(
        spec, None, f"{origin} -> {target_text} ({len(plan.columns)} columns, key: {key}; target {state})"
    )


def run_check(project: Project, out: Callable[[str], None], environ: Mapping[str, str] = os.environ) -> int:
    """Print one line per table and a total; the exit status."""
    try:
        reports = check_project(project, environ)
    except PgSyncError as exc:
        out(str(exc))
        return 2
    for report in reports:
        out(report.line())
    failed = sum(r.problem is not None for r in reports)
    out(f"{len(reports) - failed} of {len(reports)} tables ok" + (f", {failed} failed" if failed else ""))
    try:
        for line in feed_lines(project, environ):
            out(line)
    except PgSyncError as exc:
        out(str(exc))
        return 2
    return 1 if failed else 0


def require_feed_rights(scur, spec: TableSpec, plan) -> None:
    """What a `cdc` table needs of its source: logical WAL, an identity that sends its key,
    and a role that may create replication slots."""
    require_logical(scur, str(spec.target))
    source_identity(scur, spec, plan)
    # Managed services grant replication through a role of their own.
    scur.execute(
        "SELECT rolreplication OR rolsuper OR EXISTS (SELECT 1 FROM pg_roles m WHERE m.rolname IN"
        " ('rds_replication', 'cloudsqlsuperuser', 'azure_pg_admin')"
        " AND pg_has_role(current_user, m.oid, 'MEMBER'))"
        " FROM pg_roles WHERE rolname = current_user"
    )
    if not scur.fetchone()[0]:
        raise PgSyncError(
            f"`{spec.target}` is `mode: cdc`, but the source role cannot create replication slots: "
            "grant it REPLICATION (`ALTER ROLE ... REPLICATION`, or your managed service's "
            "replication role, e.g. rds_replication)"
        )


def feed_lines(project: Project, environ: Mapping[str, str] = os.environ) -> list[str]:
    """One line per change feed: its slot's lag and the WAL it keeps on the source."""
    feeds: dict[str, list[TableEntry]] = {}
    for entry in project.tables:
        if entry.feed is not None:
            feeds.setdefault(entry.source_connection, []).append(entry)
    lines = []
    for connection, entries in feeds.items():
        feed = entries[0].feed
        conn = connect(
            project.connections[connection].dsn(environ),
            readonly=True,
            application_name="pg_sync_assets check",
            role=connection,
        )
        try:
            with conn.cursor() as cur:
                status = slot_status(cur, feed)
        finally:
            conn.close()
        if not status.exists:
            lines.append(
                f"feed    {connection}: slot `{feed.slot}` not created yet (the first materialization of a "
                f"cdc table creates it); {len(entries)} cdc tables"
            )
            continue
        lag, kept = (status.lag_bytes or 0) / 1e6, (status.retained_bytes or 0) / 1e6
        lines.append(
            f"feed    {connection}: slot `{feed.slot}`, publication `{feed.publication}`: {lag:.1f} MB "
            f"behind the source, keeps {kept:.1f} MB of WAL (wal_status {status.wal_status}); "
            f"{len(entries)} cdc tables"
        )
    return lines


def drop_feed_command(
    project: Project,
    connection: str,
    table: str | None,
    out: Callable[[str], None],
    environ: Mapping[str, str] = os.environ,
) -> int:
    """`cdc-drop`: what a removed table or connection leaves on its source. A table still
    listed as `cdc` is refused: its next run would copy it again and re-add it."""
    if connection not in project.connections:
        defined = ", ".join(sorted(project.connections))
        out(f"no connection `{connection}` in the table list (defined: {defined})")
        return 2
    feed = project.connections[connection].feed
    tables = None
    listed = [e for e in project.tables if e.feed is not None and e.source_connection == connection]
    if table is not None:
        ref = TableRef.parse(table)
        if any(e.spec.source == ref for e in listed):
            out(f"`{ref}` is still a cdc table of the list: remove it (or change its mode) first")
            return 1
        tables = [ref]
    elif listed:
        names = ", ".join(e.name for e in listed)
        out(f"connection `{connection}` still has cdc tables in the list ({names}): remove them first")
        return 1
    try:
        conn = connect(
            project.connections[connection].dsn(environ),
            readonly=False,
            application_name="pg_sync_assets cdc-drop",
            role=connection,
        )
    except PgSyncError as exc:
        out(str(exc))
        return 2
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            done = drop_feed(cur, feed, tables)
    except PgSyncError as exc:
        out(str(exc))
        return 1
    finally:
        conn.close()
    for line in done or ["nothing to drop"]:
        out(line)
    return 0
