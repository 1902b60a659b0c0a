"""Jobs and schedules built from the table list.

Dagster jobs cannot mix assets with different partitions, so the batch tables
(`full_refresh`, `merge`) and each `incremental` table get jobs of their own:

- `sync_all` / `reconcile_all`: every batch table; `verify_all`: every check, copies nothing.
- `sync_daily` (schedule `sync_daily_schedule`, `schedules.daily_cron`, 02:00 UTC by
  default): the batch tables without their own `schedule`; a table with `schedule: CRON`
  gets `sync_<name>` and `sync_<name>_schedule`.
- `reconcile_daily` (03:00 UTC): `reconcile_all`.
- per source connection with `cdc` tables: `cdc_<connection>` with `cdc_<connection>_schedule`
  (`schedules.cdc_cron`, every 5 minutes by default): applies their committed changes.
- per incremental table: `sync_<name>` (partitioned) with `sync_<name>_hourly`, whose
  tick at HH:`minute_of_hour` loads the last complete hour, and `reconcile_<name>` with
  `reconcile_<name>_daily` (03:00 UTC), which repairs the whole table (deletes included).
  `reconcile_<name>` is a job of one op, not an asset job: an asset job of a partitioned
  asset needs a partition, and a reconcile covers every partition at once. It records an
  observation of the asset with what it repaired.

Names come from `definition_names` (prefixed by the list's `name:`, if it has one), which
the table list is checked against on load.

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

from .assets import SyncRunConfig, retry_policy
from .cdc_assets import cdc_jobs
from .definition_names import Names, asset_op
from .engine import reconcile_table
from .keys import resources_of, table_asset_key
from .metadata import result_metadata
from .project import Project, ScheduleSettings, TableEntry

RECONCILE_CRON = "0 3 * * *"


def _reconcile_config(entries: list[TableEntry]) -> RunConfig:
    return RunConfig(ops={asset_op(entry): SyncRunConfig(reconcile=True) for entry in entries})


def batch_jobs(
    batch: list[TableEntry], names: Names, settings: ScheduleSettings, status: DefaultScheduleStatus
):
    """sync_all, reconcile_all and the daily (or per-table cron) schedules of batch tables."""
    if not batch:
        return [], []
    keys = [table_asset_key(entry) for entry in batch]
    sync_all = define_asset_job(
        names.sync_all,
        selection=AssetSelection.assets(*keys),
        description="Materialize every full_refresh and merge table, with checks.",
    )
    reconcile_all = define_asset_job(
        names.reconcile_all,
        selection=AssetSelection.assets(*keys),
        config=_reconcile_config(batch),
        description="Repair only the rows that differ in every full_refresh and merge table.",
    )
    jobs, schedules = (
        [sync_all, reconcile_all],
        [
            ScheduleDefinition(
                name=names.reconcile_daily,
                job=reconcile_all,
                cron_schedule=RECONCILE_CRON,
                execution_timezone="UTC",
                default_status=status,
            )
        ],
    )
    daily = [entry for entry in batch if entry.spec.schedule is None]
    groups = [(names.sync_daily, names.sync_daily_schedule, settings.daily_cron, daily)] if daily else []
    groups += [
        (names.sync_job(entry), names.cron_schedule(entry), entry.spec.schedule, [entry])
        for entry in batch
        if entry.spec.schedule is not None
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


def whole_table_reconcile_job(entry: TableEntry, names: Names):
    """reconcile_<name>: repair the whole table, every partition at once, in one op."""
    spec = entry.spec

    @op(
        name=names.reconcile_op(entry),
        required_resource_keys={entry.source_connection, entry.target_connection},
        description=f"Repair exactly the rows of `{spec.target}` that differ from the source, "
        "whole table (deletes and late rows included).",
        retry_policy=retry_policy(entry.retries),
    )
    def _reconcile(context: OpExecutionContext) -> None:
        source, target = resources_of(context, entry)
        with (
            source.get_connection(f"reconcile {spec.name}", readonly=True) as source_conn,
            target.get_connection(f"reconcile {spec.name}") as target_conn,
        ):
            result = reconcile_table(spec, source_conn, target_conn, log=context.log)
        observation = AssetObservation(asset_key=table_asset_key(entry), metadata=result_metadata(result))
        context.log_event(observation)

    @job(name=names.reconcile_job(entry), description=f"Repair the whole incremental table `{spec.target}`.")
    def _job() -> None:
        _reconcile()

    return _job


def incremental_jobs(
    entry: TableEntry, names: Names, settings: ScheduleSettings, status: DefaultScheduleStatus
):
    """sync_<name> with its hourly schedule, reconcile_<name> with its daily schedule."""
    sync = define_asset_job(names.sync_job(entry), selection=AssetSelection.assets(table_asset_key(entry)))
    hourly = build_schedule_from_partitioned_job(
        sync, name=names.hourly_schedule(entry), minute_of_hour=settings.minute_of_hour, default_status=status
    )
    reconcile = whole_table_reconcile_job(entry, names)
    daily = ScheduleDefinition(
        name=names.reconcile_schedule(entry),
        job=reconcile,
        cron_schedule=RECONCILE_CRON,
        execution_timezone="UTC",
        default_status=status,
    )
    return [sync, reconcile], [hourly, daily]


def build_jobs_and_schedules(project: Project):
    settings, names = project.schedules, Names.of(project.name)
    status = DefaultScheduleStatus.RUNNING if settings.running else DefaultScheduleStatus.STOPPED
    # integer cursors run like batch tables; cdc tables run on their connection's job
    batch = [e for e in project.tables if not e.spec.hourly and e.feed is None]
    jobs, schedules = batch_jobs(batch, names, settings, status)
    more_jobs, more_schedules = cdc_jobs(project, settings, status)
    jobs += more_jobs
    schedules += more_schedules
    for entry in project.tables:
        if entry.spec.hourly:
            more_jobs, more_schedules = incremental_jobs(entry, names, settings, status)
            jobs += more_jobs
            schedules += more_schedules
    jobs.append(
        define_asset_job(
            names.verify_all,
            selection=AssetSelection.checks_for_assets(*(table_asset_key(e) for e in project.tables)),
            description="Run every check over whole tables; copies nothing.",
        )
    )
    return jobs, schedules
