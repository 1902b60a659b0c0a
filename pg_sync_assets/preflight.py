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

from .engine import PgSyncError, TableSpec, connect
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
    return 1 if failed else 0
