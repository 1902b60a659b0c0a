"""The names of the Dagster definitions the table list produces, in one place.

Jobs, schedules and ops are named after each table's asset name (`sync_<name>`,
`reconcile_<name>_table`, ...), next to fixed names (`sync_all`, `verify_all`, ...). Two
definitions with one name make Dagster refuse the whole code location with a message
that names neither the file nor the entry ("Duplicate definition found for unresolved
job"), so the table list is checked here, when it loads, and the error says which
entry to rename. Pure: no Dagster import.
"""

from __future__ import annotations

from .engine.errors import ConfigError
from .engine.spec import Mode, TableSpec

SYNC_ALL, RECONCILE_ALL, VERIFY_ALL, SYNC_DAILY = "sync_all", "reconcile_all", "verify_all", "sync_daily"
RECONCILE_DAILY, SYNC_DAILY_SCHEDULE = "reconcile_daily", "sync_daily_schedule"
FIXED_RUNNABLES = (SYNC_ALL, RECONCILE_ALL, VERIFY_ALL, SYNC_DAILY, RECONCILE_DAILY, SYNC_DAILY_SCHEDULE)


def sync_job(spec: TableSpec) -> str:
    return f"sync_{spec.name}"


def cron_schedule(spec: TableSpec) -> str:
    return f"sync_{spec.name}_schedule"


def hourly_schedule(spec: TableSpec) -> str:
    return f"sync_{spec.name}_hourly"


def reconcile_job(spec: TableSpec) -> str:
    return f"reconcile_{spec.name}"


def reconcile_schedule(spec: TableSpec) -> str:
    return f"reconcile_{spec.name}_daily"


def reconcile_op(spec: TableSpec) -> str:
    return f"reconcile_{spec.name}_table"


def op_names(spec: TableSpec) -> list[str]:
    """The ops named after this table, besides its asset's own."""
    return [reconcile_op(spec)] if spec.mode is Mode.INCREMENTAL else []


def runnable_names(spec: TableSpec) -> list[str]:
    """The jobs and schedules named after this table."""
    if spec.mode is Mode.INCREMENTAL:
        return [sync_job(spec), hourly_schedule(spec), reconcile_job(spec), reconcile_schedule(spec)]
    if spec.schedule is not None:
        return [sync_job(spec), cron_schedule(spec)]
    return []


def reject_name_collisions(specs: list[TableSpec], where: str) -> None:
    """ConfigError naming the entries whose definitions would share a name."""
    runnables: dict[str, str] = {name: "pg_sync_assets itself" for name in FIXED_RUNNABLES}
    ops: dict[str, str] = {spec.name: f"the asset of `{spec.name}`" for spec in specs}
    for spec in specs:
        for name, taken, kind in [(n, runnables, "job/schedule") for n in runnable_names(spec)] + [
            (n, ops, "op") for n in op_names(spec)
        ]:
            owner = taken.setdefault(name, f"table `{spec.name}`")
            if owner != f"table `{spec.name}`":
                raise ConfigError(
                    f"{where}: table entry `{spec.name}` (target `{spec.target}`) would define the "
                    f"{kind} `{name}`, which {owner} already defines; set a different `name:` "
                    "on this entry"
                )
