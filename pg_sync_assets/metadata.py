"""What a table's asset says of itself: its description and definition metadata, and
the metadata of each materialization (what changed, what was compared, Dagster's
standard table metadata). Pure functions of an entry or a sync's result."""


from dagster import (
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableColumnDep,
    TableColumnLineage,
    TableConstraints,
    TableSchema,
)

from .cdc_assets import cdc_metadata
from .checks import compared_window
from .engine import (
    SyncResult,
)
from .engine.load.first_load import FIRST_LOAD
from .engine.load.merge import DIFFERENTIAL, KEYED_REFRESH, TRUNCATE_INSERT
from .engine.run.cdc import APPLIED, SNAPSHOT_COPY
from .keys import source_asset_key
from .locations import location_metadata
from .project import TableEntry


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


def change_counts(result: SyncResult) -> dict:
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
        **change_counts(result),
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
