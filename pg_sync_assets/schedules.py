"""Jobs and schedules built from the table list.

Dagster jobs cannot mix assets with different partitions, so the batch tables
(`full_refresh`, `merge`) and each `incremental` table get jobs of their own:

- `sync_all` / `reconcile_all`: every batch table; `verify_all`: every check, copies nothing.
- `sync_daily` (schedule `sync_daily_schedule`, `schedules.daily_cron`, 02:00 UTC by
  default): the batch tables without their own `schedule`; a table with `schedule: CRON`
  gets `sync_<name>` and `sync_<name>_schedule`.
- `reconcile_daily` (03:00 UTC): `reconcile_all`.
- per incremental table: `sync_<name>` (partitioned) with `sync_<name>_hourly`, whose
  tick at HH:`minute_of_hour` loads the last complete hour, and `reconcile_<name>` with
  `reconcile_<name>_daily` (03:00 UTC), which repairs the whole table (deletes included).

Every schedule starts STOPPED unless `schedules: {running: true}`.
"""

from collections import defaultdict

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunConfig,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from .assets import SyncRunConfig, table_asset_key, table_partitions
from .config import ScheduleSettings
from .engine import Mode, TableSpec

RECONCILE_CRON = "0 3 * * *"


def _reconcile_config(specs: list[TableSpec]) -> RunConfig:
    return RunConfig(ops={spec.name: SyncRunConfig(reconcile=True) for spec in specs})


def batch_jobs(batch: list[TableSpec], settings: ScheduleSettings, status: DefaultScheduleStatus):
    """sync_all, reconcile_all and the daily (or per-table cron) schedules of batch tables."""
    if not batch:
        return [], []
    keys = [table_asset_key(spec) for spec in batch]
    sync_all = define_asset_job(
        "sync_all",
        selection=AssetSelection.assets(*keys),
        description="Materialize every full_refresh and merge table, with checks.",
    )
    reconcile_all = define_asset_job(
        "reconcile_all",
        selection=AssetSelection.assets(*keys),
        config=_reconcile_config(batch),
        description="Repair only the rows that differ in every full_refresh and merge table.",
    )
    jobs, schedules = (
        [sync_all, reconcile_all],
        [
            ScheduleDefinition(
                name="reconcile_daily",
                job=reconcile_all,
                cron_schedule=RECONCILE_CRON,
                execution_timezone="UTC",
                default_status=status,
            )
        ],
    )
    by_cron: dict[str, list[TableSpec]] = defaultdict(list)
    for spec in batch:
        by_cron[spec.schedule or settings.daily_cron].append(spec)
    for cron, group in by_cron.items():
        name = "sync_daily" if cron == settings.daily_cron else f"sync_{group[0].name}"
        if cron != settings.daily_cron and len(group) > 1:
            name = f"sync_{'_'.join(s.name for s in group)}"
        job = define_asset_job(name, selection=AssetSelection.assets(*(table_asset_key(s) for s in group)))
        jobs.append(job)
        schedules.append(
            ScheduleDefinition(
                name=f"{name}_schedule",
                job=job,
                cron_schedule=cron,
                execution_timezone="UTC",
                default_status=status,
            )
        )
    return jobs, schedules


def incremental_jobs(spec: TableSpec, settings: ScheduleSettings, status: DefaultScheduleStatus):
    """sync_<name> with its hourly schedule, reconcile_<name> with its daily schedule."""
    key, partitions = table_asset_key(spec), table_partitions(spec)
    sync = define_asset_job(f"sync_{spec.name}", selection=AssetSelection.assets(key))
    hourly = build_schedule_from_partitioned_job(
        sync, name=f"sync_{spec.name}_hourly", minute_of_hour=settings.minute_of_hour, default_status=status
    )
    reconcile = define_asset_job(
        f"reconcile_{spec.name}",
        selection=AssetSelection.assets(key),
        config=_reconcile_config([spec]),
    )

    @schedule(
        name=f"reconcile_{spec.name}_daily",
        job=reconcile,
        cron_schedule=RECONCILE_CRON,
        execution_timezone="UTC",
        default_status=status,
    )
    def _reconcile_daily(context: ScheduleEvaluationContext) -> RunRequest:
        # The run names the last partition; reconcile compares the whole table anyway.
        last = partitions.get_last_partition_key(current_time=context.scheduled_execution_time)
        return RunRequest(partition_key=last)

    return [sync, reconcile], [hourly, _reconcile_daily]


def build_jobs_and_schedules(specs: list[TableSpec], settings: ScheduleSettings):
    status = DefaultScheduleStatus.RUNNING if settings.running else DefaultScheduleStatus.STOPPED
    jobs, schedules = batch_jobs([s for s in specs if s.mode is not Mode.INCREMENTAL], settings, status)
    for spec in specs:
        if spec.mode is Mode.INCREMENTAL:
            more_jobs, more_schedules = incremental_jobs(spec, settings, status)
            jobs += more_jobs
            schedules += more_schedules
    jobs.append(
        define_asset_job(
            "verify_all",
            selection=AssetSelection.all_asset_checks(),
            description="Run every check over whole tables; copies nothing.",
        )
    )
    return jobs, schedules
