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
  `reconcile_<name>` is a job of one op, not an asset job: an asset job of a partitioned
  asset needs a partition, and a reconcile covers every partition at once. It records an
  observation of the asset with what it repaired.

Names come from `definition_names`, which the table list is checked against on load.

Every schedule starts STOPPED unless `schedules: {running: true}`.
"""

from dagster import (
    AssetObservation,
    AssetSelection,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunConfig,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    job,
    op,
)

from . import definition_names as names
from .assets import SyncRunConfig, result_metadata
from .config import ScheduleSettings
from .engine import Mode, TableSpec, reconcile_table
from .keys import SOURCE_RESOURCE, TARGET_RESOURCE, table_asset_key

RECONCILE_CRON = "0 3 * * *"


def _reconcile_config(specs: list[TableSpec]) -> RunConfig:
    return RunConfig(ops={spec.name: SyncRunConfig(reconcile=True) for spec in specs})


def batch_jobs(batch: list[TableSpec], settings: ScheduleSettings, status: DefaultScheduleStatus):
    """sync_all, reconcile_all and the daily (or per-table cron) schedules of batch tables."""
    if not batch:
        return [], []
    keys = [table_asset_key(spec) for spec in batch]
    sync_all = define_asset_job(
        names.SYNC_ALL,
        selection=AssetSelection.assets(*keys),
        description="Materialize every full_refresh and merge table, with checks.",
    )
    reconcile_all = define_asset_job(
        names.RECONCILE_ALL,
        selection=AssetSelection.assets(*keys),
        config=_reconcile_config(batch),
        description="Repair only the rows that differ in every full_refresh and merge table.",
    )
    jobs, schedules = (
        [sync_all, reconcile_all],
        [
            ScheduleDefinition(
                name=names.RECONCILE_DAILY,
                job=reconcile_all,
                cron_schedule=RECONCILE_CRON,
                execution_timezone="UTC",
                default_status=status,
            )
        ],
    )
    daily = [spec for spec in batch if spec.schedule is None]
    groups = [(names.SYNC_DAILY, names.SYNC_DAILY_SCHEDULE, settings.daily_cron, daily)] if daily else []
    groups += [
        (names.sync_job(spec), names.cron_schedule(spec), spec.schedule, [spec])
        for spec in batch
        if spec.schedule is not None
    ]
    for job_name, schedule_name, cron, group in groups:
        sync = define_asset_job(
            job_name, selection=AssetSelection.assets(*(table_asset_key(s) for s in group))
        )
        jobs.append(sync)
        schedules.append(
            ScheduleDefinition(
                name=schedule_name,
                job=sync,
                cron_schedule=cron,
                execution_timezone="UTC",
                default_status=status,
            )
        )
    return jobs, schedules


def whole_table_reconcile_job(spec: TableSpec):
    """reconcile_<name>: repair the whole table, every partition at once, in one op."""

    @op(
        name=names.reconcile_op(spec),
        required_resource_keys={SOURCE_RESOURCE, TARGET_RESOURCE},
        description=f"Repair exactly the rows of `{spec.target}` that differ from the source, "
        "whole table (deletes and late rows included).",
    )
    def _reconcile(context: OpExecutionContext) -> None:
        source = getattr(context.resources, SOURCE_RESOURCE)
        target = getattr(context.resources, TARGET_RESOURCE)
        with (
            source.get_connection(f"reconcile {spec.name}", readonly=True) as source_conn,
            target.get_connection(f"reconcile {spec.name}") as target_conn,
        ):
            result = reconcile_table(spec, source_conn, target_conn, log=context.log)
        context.log_event(AssetObservation(asset_key=table_asset_key(spec), metadata=result_metadata(result)))

    @job(name=names.reconcile_job(spec), description=f"Repair the whole incremental table `{spec.target}`.")
    def _job() -> None:
        _reconcile()

    return _job


def incremental_jobs(spec: TableSpec, settings: ScheduleSettings, status: DefaultScheduleStatus):
    """sync_<name> with its hourly schedule, reconcile_<name> with its daily schedule."""
    sync = define_asset_job(names.sync_job(spec), selection=AssetSelection.assets(table_asset_key(spec)))
    hourly = build_schedule_from_partitioned_job(
        sync, name=names.hourly_schedule(spec), minute_of_hour=settings.minute_of_hour, default_status=status
    )
    reconcile = whole_table_reconcile_job(spec)
    daily = ScheduleDefinition(
        name=names.reconcile_schedule(spec),
        job=reconcile,
        cron_schedule=RECONCILE_CRON,
        execution_timezone="UTC",
        default_status=status,
    )
    return [sync, reconcile], [hourly, daily]


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
            names.VERIFY_ALL,
            selection=AssetSelection.all_asset_checks(),
            description="Run every check over whole tables; copies nothing.",
        )
    )
    return jobs, schedules
