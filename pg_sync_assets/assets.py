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
    MetadataValue,
    RetryPolicy,
    TableColumn,
    TableColumnConstraints,
    TableColumnDep,
    TableColumnLineage,
    TableConstraints,
    TableSchema,
    multi_asset,
)
from pydantic import Field

from .cdc_assets import cdc_metadata, member_connections, run_cdc
from .checks import compared_window, evaluate_checks, fail_step, table_check_specs
from .engine import (
    ConfigError,
    SchemaMismatchError,
    SyncResult,
    TableSpec,
    VerificationError,
    reconcile_table,
    sync_table,
)
from .engine.load.first_load import FIRST_LOAD
from .engine.load.merge import DIFFERENTIAL, KEYED_REFRESH, TRUNCATE_INSERT
from .engine.plan.window import Window, partition_key
from .engine.run.cdc import APPLIED, SNAPSHOT_COPY
from .keys import SOURCE_POOL, resources_of, source_asset_key, source_tables, table_asset_key
from .locations import location_metadata, session_location
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


def column_lineage(entry: TableEntry, result: SyncResult) -> TableColumnLineage | None:
    """Each target column from the source column of the same name (table sources only:
    a query's columns may be computed from several)."""
    spec = entry.spec
    if spec.source is None:
        return None
    upstream = source_asset_key(entry.source_connection, spec.source)
    return TableColumnLineage(
        deps_by_column={
            c.name: [TableColumnDep(asset_key=upstream, column_name=c.name)] for c in result.plan.columns
        }
    )


def describe_entry(entry: TableEntry) -> str:
    spec = entry.spec
    # The catalog shows descriptions as plain text in places: no markdown fences.
    origin = f"`{spec.source}`" if spec.source else "the rows of its `query` (in the definition metadata)"
    lines = [
        f"Copies {origin} from connection `{entry.source_connection}` into `{spec.target}` on "
        f"connection `{entry.target_connection}` ({spec.mode.value})."
    ]
    if spec.where:
        lines.append(f"Scope: `WHERE {spec.where}` (copy and checks alike).")
    if spec.delete_missing:
        lines.append("Rows whose key is gone from the source scope are deleted.")
    if spec.snapshot_group:
        lines.append(
            f"Synced with the other tables of snapshot group `{spec.snapshot_group}`: one source "
            "snapshot, one target transaction."
        )
    if spec.columns_include:
        lines.append("Copies only the columns " + ", ".join(f"`{c}`" for c in spec.columns_include) + ".")
    if spec.columns_exclude:
        lines.append(
            "Never reads nor copies the columns " + ", ".join(f"`{c}`" for c in spec.columns_exclude) + "."
        )
    if spec.hourly:
        lines.append(
            f"Hourly partitions on `{spec.incremental_column}` ({spec.timezone}), each run re-reading "
            f"the {spec.lookback} hour(s) before its window for late rows."
        )
    elif spec.by_integer_cursor:
        lines.append(
            f"Append-only: each run syncs the rows whose `{spec.incremental_column}` is above the "
            f"target's maximum less {spec.lookback_rows} row(s)."
        )
    return "\n\n".join(lines)


def column_schema(plan) -> TableSchema:
    """The copied columns with their type, nullability and the key."""
    key = set(plan.key)
    columns = [
        TableColumn(
            c.name,
            c.type_key,
            constraints=TableColumnConstraints(
                nullable=not c.not_null, other=["primary key"] if c.name in key else None
            ),
        )
        for c in plan.columns
    ]
    constraints = TableConstraints(other=[f"primary key ({', '.join(plan.key)})"]) if plan.key else None
    return TableSchema(columns=columns, constraints=constraints)


def definition_metadata(entry: TableEntry, location=None) -> dict:
    spec = entry.spec
    metadata = {
        "dagster/table_name": str(spec.target),
        **location_metadata(location, spec.target),
        "source": spec.source_label,
        "mode": spec.mode.value,
        "source_connection": entry.source_connection,
        "target_connection": entry.target_connection,
    }
    if spec.query:
        metadata["query"] = MetadataValue.text(spec.query)
    if spec.where:
        metadata["where"] = spec.where
    if spec.snapshot_group:
        metadata["snapshot_group"] = spec.snapshot_group
    if spec.columns_key:
        metadata[spec.columns_key] = ", ".join(spec.columns_include or spec.columns_exclude)
    if spec.primary_key:
        metadata["primary_key"] = ", ".join(spec.primary_key)
    return metadata


def _change_counts(result: SyncResult) -> dict:
    """What the run did to the final table, labelled so nobody reads a rewrite as churn."""
    if result.method == TRUNCATE_INSERT:
        # TRUNCATE + INSERT rewrites every row whether it changed or not.
        return {
            "refresh_method": "truncate + insert (every row rewritten)",
            "rows_written": result.inserted,
            "rows_replaced": result.deleted,
        }
    counts = {
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_deleted": result.deleted,
    }
    if result.method == KEYED_REFRESH:
        counts["refresh_method"] = "by key (other tables reference this one): only changed rows written"
    if result.method == DIFFERENTIAL:
        counts["refresh_method"] = "differential: only the rows that differed were copied and written"
    if result.method == FIRST_LOAD:
        counts["refresh_method"] = "first load: copied straight into the new table, its key built after"
    if result.method == SNAPSHOT_COPY:
        counts["refresh_method"] = "cdc: copied from the snapshot of a new replication slot"
    if result.method == APPLIED:
        counts["refresh_method"] = "cdc: applied the source's committed changes"
    return counts


def _outcome(d) -> str:
    if d.fell_back:
        return "more than half of the key buckets differed: the whole scope was copied"
    if d.buckets == 0 and d.target_recorded_at is not None:
        return (
            f"the source checksum equals the target's, recorded by the run verified at "
            f"{d.target_recorded_at}; no target row was written since: nothing was copied or written"
        )
    if d.buckets == 0:
        return "source and target checksums are equal: nothing was copied or written"
    return (
        f"{d.rows_missing + d.rows_changed} rows copied, {d.rows_extra} only in the target; "
        f"{d.buckets_skipped} of {d.buckets} key buckets were equal and skipped"
    )


def differential_metadata(result: SyncResult) -> dict:
    """What the comparison before the copy found, and whether the run used it."""
    d = result.differential
    if d is None:
        return {}
    return {
        # A count fixed by the table's size: shown, not plotted as a series.
        "diff_key_buckets": MetadataValue.text(str(d.buckets)),
        "diff_key_buckets_equal": d.buckets_skipped,
        "diff_key_buckets_differing": d.buckets_differing,
        "diff_source_rows_compared": d.source_rows,
        "diff_target_rows_compared": d.target_rows,
        "diff_rows_missing": d.rows_missing,
        "diff_rows_changed": d.rows_changed,
        "diff_rows_only_in_target": d.rows_extra,
        "diff_outcome": _outcome(d),
        "diff_target_read": d.target_read,
        **({"diff_seconds_bucket_pass": d.seconds_buckets} if d.buckets else {}),
        **({"diff_seconds_key_pass": d.seconds_keys} if d.buckets_differing else {}),
    }


def _fmt(moment) -> str:
    return moment.isoformat()


def result_metadata(result: SyncResult) -> dict:
    """Materialization metadata. A partitioned run's figures cover every partition of the
    run (and the lookback), so they carry a `run_` prefix; each partition's own count is
    `dagster/partition_row_count`, recorded per partition."""
    seconds = result.stage_seconds
    figures = {
        "rows_copied": result.rows_copied,
        **_change_counts(result),
        # Sizes in MB and durations in seconds (named so), so the UI's plots read as such.
        "megabytes_streamed": round(result.bytes_copied / 1e6, 3),
        "copy_rows_per_second": round(result.copy_rows_per_second),
        "copy_sessions": result.copy_workers,
    }
    if result.window is not None:
        figures = {f"run_{k}": v for k, v in figures.items()}
        figures["run_partitions"] = len(result.window.hours())
        figures["target_table_rows"] = result.target_rows
    else:
        figures["dagster/row_count"] = result.target_rows
    metadata = {
        **figures,
        "dagster/table_name": result.table,
        "dagster/column_schema": column_schema(result.plan),
        **location_metadata(result.target_location, result.plan.spec.target),
        "seconds_total": round(sum(seconds.values()), 3),
        "primary_key": ", ".join(result.plan.key) or "(none)",
        "created_target_table": result.created_target,
    }
    metadata.update({f"seconds_{stage}": value for stage, value in seconds.items()})
    metadata.update(differential_metadata(result))
    metadata.update(cdc_metadata(result))
    if result.verification is not None:
        v = result.verification
        metadata.update(
            {
                "verified_source_rows": v.source.rows,
                "verified_target_rows": v.final.rows + v.rows_only_in_target,
                "verified_source_checksum": v.source.checksum_hex,
                "verified_target_checksum": v.final.checksum_hex,
                "verified_scope": v.final_scope,
                "rows_only_in_target": v.rows_only_in_target,
            }
        )
    if result.difference is not None:
        d = result.difference
        metadata.update(
            {
                "reconciled": True,
                "rows_missing_in_target": d.missing_count,
                "rows_extra_in_target": d.extra_count,
                "rows_changed": d.changed_count,
            }
        )
    if result.window is not None:
        metadata["partition_window"] = f"[{_fmt(result.window.start)}, {_fmt(result.window.end)})"
        metadata["window"] = compared_window(result)
        metadata["rows_with_null_cursor"] = result.null_cursor_rows
    if result.plan.spec.by_integer_cursor:
        column = result.plan.spec.incremental_column
        if result.difference is not None:
            metadata["cursor_after"] = "every row (a reconcile compares the whole table)"
        elif result.cursor_after is None:
            metadata["cursor_after"] = "every row (the target was empty)"
        else:
            metadata["cursor_after"] = f"`{column}` > {result.cursor_after}"
        metadata["rows_with_null_cursor"] = result.null_cursor_rows
    if result.removed_orphans:
        metadata["removed_orphaned_staging"] = ", ".join(result.removed_orphans)
    if result.schema_changes:
        metadata["schema_changes"] = MetadataValue.md("\n".join(f"- {c}" for c in result.schema_changes))
    return metadata


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
    changes = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in _change_counts(result).items())
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
