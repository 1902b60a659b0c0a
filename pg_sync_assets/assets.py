"""Asset factory: one table spec -> one Dagster asset whose materialization syncs it.

The asset declares its checks and evaluates them in the same step (`checks.py`), so a
sync of N tables runs N steps, each in one process: the checks report the comparison
the sync made before its commit. The asset can be subset to its checks alone, which is
how `verify_all` (and a check run from the UI) compares live without copying. The body
only opens the two sessions, calls the engine and turns its result into metadata;
everything PostgreSQL lives in the engine.
"""

from dataclasses import replace
from zoneinfo import ZoneInfo

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    Backoff,
    Config,
    Failure,
    FreshnessPolicy,
    HourlyPartitionsDefinition,
    MaterializeResult,
    RetryPolicy,
    multi_asset,
)
from pydantic import Field

from .cdc_assets import member_connections, run_cdc
from .checks import evaluate_checks, fail_step, table_check_specs
from .engine import (
    ConfigError,
    SchemaMismatchError,
    SyncResult,
    TableSpec,
    VerificationError,
    reconcile_table,
    sync_table,
)
from .engine.plan.window import Window, partition_key
from .keys import SOURCE_POOL, resources_of, source_asset_key, source_tables, table_asset_key
from .locations import session_location
from .metadata import change_counts, column_lineage, definition_metadata, describe_entry, result_metadata
from .project import Retries, TableEntry

__all__ = ["SOURCE_POOL", "build_source_assets", "build_table_asset", "table_asset_key"]

# Errors that the same run would meet again: a retry policy does not apply to them.
NOT_TRANSIENT = (ConfigError, SchemaMismatchError, VerificationError)


def build_source_assets(entries: list[TableEntry]) -> list[AssetSpec]:
    """One external asset per source table the list reads, in the group of its connection:
    the upstream end of lineage. Identical specs from several lists merge in Dagster."""
    tables = dict.fromkeys((e.source_connection, t) for e in entries for t in source_tables(e.spec))
    return [
        AssetSpec(
            source_asset_key(connection, table),
            description=f"`{table}` in the database of connection `{connection}` "
            "(read by pg_sync_assets, never written)",
            metadata={"dagster/table_name": str(table), "connection": connection},
            kinds={"postgres"},
            group_name=connection,
        )
        for connection, table in tables
    ]


class SyncRunConfig(Config):
    """Run config of a table asset (`--config-json '{"ops": {"NAME": {"config": {...}}}}'`)."""

    reconcile: bool = Field(
        default=False,
        description="Repair only the rows that differ (missing, extra, changed) instead of copying "
        "the whole scope; the job reconcile_all sets it for every table.",
    )


def table_partitions(spec: TableSpec) -> HourlyPartitionsDefinition | None:
    """Hourly partitions for `incremental` tables on a time column (Dagster's standard key
    format); an integer cursor's asset has none."""
    if not spec.hourly:
        return None
    return HourlyPartitionsDefinition(start_date=spec.partition_start, timezone=spec.timezone)


def record_partition_counts(context: AssetExecutionContext, entry: TableEntry, result: SyncResult) -> None:
    """`dagster/partition_row_count` for every hour of the run's window (ranges included)."""
    if result.window is None:
        return
    zone = ZoneInfo(entry.spec.timezone)
    for hour in result.window.hours():
        key = partition_key(hour.astimezone(zone).replace(tzinfo=None))
        context.add_asset_metadata(
            {"dagster/partition_row_count": result.hour_counts.get(key, 0)},
            asset_key=table_asset_key(entry),
            partition_key=key,
        )


def retry_policy(retries: Retries | None) -> RetryPolicy | None:
    if retries is None:
        return None
    backoff = Backoff.EXPONENTIAL if retries.backoff == "exponential" else Backoff.LINEAR
    return RetryPolicy(max_retries=retries.max_retries, delay=retries.delay, backoff=backoff)


def sync_or_fail(context: AssetExecutionContext, entry: TableEntry, config: SyncRunConfig) -> SyncResult:
    """The sync; an error that a retry would meet again fails the step without retries (a
    failed run leaves the target as it was, so the others are safe to retry)."""
    try:
        return _sync(context, entry, *resources_of(context, entry), config)
    except NOT_TRANSIENT as exc:
        error = Failure(description=str(exc), allow_retries=False)
    raise error


def _sync(
    context: AssetExecutionContext, entry: TableEntry, source, target, config: SyncRunConfig
) -> SyncResult:
    spec = entry.spec
    with (
        source.get_connection(f"copy {spec.name}", readonly=True) as source_conn,
        target.get_connection(f"load {spec.name}") as target_conn,
    ):
        location = session_location(target_conn)
        if config.reconcile:  # the whole table, whatever partition the run names
            result = reconcile_table(spec, source_conn, target_conn, log=context.log)
        elif entry.feed is not None:
            result = run_cdc(context, entry, source_conn, target_conn)
        else:
            window = None
            if spec.hourly:
                time_window = context.partition_time_window
                window = Window(time_window.start, time_window.end)
            result = sync_table(spec, source_conn, target_conn, log=context.log, window=window)
    return replace(result, target_location=location)


def table_asset_spec(entry: TableEntry) -> AssetSpec:
    """The asset of one table entry, as its step declares it."""
    return AssetSpec(
        table_asset_key(entry),
        description=entry.description or describe_entry(entry),
        metadata=definition_metadata(entry, entry.target_location),
        kinds={"postgres"},
        deps=[source_asset_key(entry.source_connection, t) for t in source_tables(entry.spec)],
        group_name=entry.group_name,
        owners=list(entry.owners),
        tags=dict(entry.tags),
        code_version=entry.code_version,
        automation_condition=automation_condition(entry),
        freshness_policy=freshness_policy(entry),
    )


def automation_condition(entry: TableEntry) -> AutomationCondition | None:
    if entry.automation is None:
        return None
    if entry.automation.on_cron is None:
        return AutomationCondition.eager()
    # Dagster's `on_cron` also waits for every upstream asset to update after the tick; a
    # table's upstream is its source table's external asset, which nothing updates.
    cron = entry.automation.on_cron
    condition = AutomationCondition.cron_tick_passed(cron, "UTC") & ~AutomationCondition.in_progress()
    if entry.spec.hourly:
        condition = condition & AutomationCondition.in_latest_time_window()
    return condition.with_label(f"on cron {cron} (UTC)")


def freshness_policy(entry: TableEntry) -> FreshnessPolicy | None:
    if entry.freshness is None:
        return None
    return FreshnessPolicy.time_window(
        fail_window=entry.freshness.fail_window, warn_window=entry.freshness.warn_window
    )


def materialize_result(
    context: AssetExecutionContext, entry: TableEntry, result: SyncResult
) -> MaterializeResult:
    """Log what the sync did; its materialization with metadata and column lineage."""
    changes = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in change_counts(result).items())
    context.log.info(
        "`%s`: %d rows copied (%.0f rows/s); %s",
        result.table,
        result.rows_copied,
        result.copy_rows_per_second,
        changes,
    )
    metadata = result_metadata(result)
    lineage = column_lineage(entry, result)
    if lineage is not None:
        metadata["dagster/column_lineage"] = lineage
    return MaterializeResult(asset_key=table_asset_key(entry), metadata=metadata)


def build_table_asset(entry: TableEntry) -> AssetsDefinition:
    """The asset that syncs `entry` and checks it, in one step.

    Incremental tables are partitioned by hour; a range of partitions runs as one pass
    (one COPY, one merge) over the whole range.
    """
    partitions = table_partitions(entry.spec)
    key = table_asset_key(entry)

    @multi_asset(
        name=entry.ident,
        specs=[table_asset_spec(entry)],
        check_specs=table_check_specs(entry),
        can_subset=True,
        required_resource_keys={entry.source_connection, entry.target_connection, *member_connections(entry)},
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run() if partitions else None,
        retry_policy=retry_policy(entry.retries),
        pool=SOURCE_POOL,
    )
    def _table(context: AssetExecutionContext, config: SyncRunConfig):
        result = None
        if key in context.selected_asset_keys:
            result = sync_or_fail(context, entry, config)
            record_partition_counts(context, entry, result)
            yield materialize_result(context, entry, result)
        failures: list[str] = []
        yield from evaluate_checks(context, entry, result, failures)
        fail_step(failures)

    return _table
