"""`python -m pg_sync_assets check`: every table of the list against both catalogs.

Loading the definitions opens no connection (a code location must load when a database
is down, and every step process re-imports it); the catalog checks run at the start of
each materialization, and here, for deploy pipelines and CI: one line per table, exit
status 1 when any table would fail. Plain Python: no Dagster import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .engine import PgSyncError, TableSpec, connect
from .engine.run import preflight

SOURCE_URL_ENV = "PG_SYNC_SOURCE_URL"
TARGET_URL_ENV = "PG_SYNC_TARGET_URL"


@dataclass(frozen=True)
class TableReport:
    spec: TableSpec
    problem: str | None  # None: the table can be synced as configured
    detail: str = ""

    def line(self) -> str:
        if self.problem is None:
            return f"ok      {self.spec.name}: {self.detail}"
        return f"FAILED  {self.spec.name}: {self.problem}"


def check_tables(specs: list[TableSpec], source_url: str, target_url: str) -> list[TableReport]:
    """One report per table; a connection that fails is reported for every table."""
    source = connect(source_url, readonly=True, application_name="pg_sync_assets check", role="source")
    try:
        target = connect(target_url, readonly=True, application_name="pg_sync_assets check", role="target")
    except PgSyncError:
        source.close()
        raise
    try:
        return [_check_one(spec, source, target) for spec in specs]
    finally:
        source.close()
        target.close()


def _check_one(spec: TableSpec, source, target) -> TableReport:
    source.rollback()
    target.rollback()
    try:
        with source.cursor() as scur, target.cursor() as tcur:
            plan, target_cols = preflight(scur, tcur, spec)
    except PgSyncError as exc:
        return TableReport(spec, str(exc))
    finally:
        source.rollback()
        target.rollback()
    origin = f"`{spec.source}`" if spec.source else "query"
    key = ", ".join(plan.key) or "no key"
    state = "exists, matches" if target_cols else "will be created"
    return TableReport(
        spec, None, f"{origin} -> `{spec.target}` ({len(plan.columns)} columns, key: {key}; target {state})"
    )


def run_check(specs: list[TableSpec], out: Callable[[str], None], environ=os.environ) -> int:
    """Print one line per table and a total; the exit status."""
    source_url, target_url = environ.get(SOURCE_URL_ENV), environ.get(TARGET_URL_ENV)
    if not source_url or not target_url:
        out(f"set {SOURCE_URL_ENV} and {TARGET_URL_ENV} to the source and target databases")
        return 2
    try:
        reports = check_tables(specs, source_url, target_url)
    except PgSyncError as exc:
        out(str(exc))
        return 2
    for report in reports:
        out(report.line())
    failed = sum(r.problem is not None for r in reports)
    out(f"{len(reports) - failed} of {len(reports)} tables ok" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0
