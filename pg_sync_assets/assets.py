"""Asset factory: one table spec -> one Dagster asset whose materialization syncs it.

The asset body only opens the two sessions, calls `engine.sync_table` and turns the
result into metadata; everything PostgreSQL lives in the engine.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from .engine import SyncResult, TableSpec, reconcile_table, sync_table

SOURCE_RESOURCE = "source"
TARGET_RESOURCE = "target"


def table_asset_key(spec: TableSpec) -> AssetKey:
    return AssetKey([spec.name])


def describe_spec(spec: TableSpec) -> str:
    origin = f"`{spec.source}`" if spec.source else f"query:\n\n```sql\n{spec.query}\n```\n"
    lines = [f"Copies {origin} from the source database into `{spec.target}` ({spec.mode.value})."]
    if spec.where:
        lines.append(f"Scope: `WHERE {spec.where}` (copy and checks alike).")
    if spec.delete_missing:
        lines.append("Rows whose key is gone from the source scope are deleted.")
    return "\n\n".join(lines)


def definition_metadata(spec: TableSpec) -> dict:
    metadata = {
        "dagster/table_name": str(spec.target),
        "source": spec.source_label if spec.source else MetadataValue.md(f"```sql\n{spec.query}\n```"),
        "mode": spec.mode.value,
    }
    if spec.where:
        metadata["where"] = spec.where
    if spec.primary_key:
        metadata["primary_key"] = ", ".join(spec.primary_key)
    return metadata


def result_metadata(result: SyncResult) -> dict:
    seconds = result.stage_seconds
    metadata = {
        "dagster/row_count": result.target_rows,
        "dagster/table_name": result.table,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(c.name, c.type_key, constraints=None) for c in result.plan.columns]
        ),
        "rows_copied": result.rows_copied,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_deleted": result.deleted,
        "bytes_streamed": result.bytes_copied,
        "copy_rows_per_second": round(result.copy_rows_per_second),
        "seconds_total": round(sum(seconds.values()), 3),
        "primary_key": ", ".join(result.plan.key) or "(none)",
        "created_target_table": result.created_target,
    }
    metadata.update({f"seconds_{stage}": value for stage, value in seconds.items()})
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
    if result.removed_orphans:
        metadata["removed_orphaned_staging"] = ", ".join(result.removed_orphans)
    return metadata


class SyncRunConfig(Config):
    """Run config of a table asset (`--config-json '{"ops": {"NAME": {"config": {...}}}}'`)."""

    reconcile: bool = Field(
        default=False,
        description="Repair only the rows that differ (missing, extra, changed) instead of copying "
        "the whole scope; the job reconcile_all sets it for every table.",
    )


def build_table_asset(spec: TableSpec) -> AssetsDefinition:
    """The asset that syncs `spec`; its checks come from `checks.build_table_checks`."""

    @asset(
        key=table_asset_key(spec),
        description=describe_spec(spec),
        metadata=definition_metadata(spec),
        kinds={"postgres"},
        required_resource_keys={SOURCE_RESOURCE, TARGET_RESOURCE},
    )
    def _sync(context: AssetExecutionContext, config: SyncRunConfig) -> MaterializeResult:
        source = getattr(context.resources, SOURCE_RESOURCE)
        target = getattr(context.resources, TARGET_RESOURCE)
        run = reconcile_table if config.reconcile else sync_table
        with (
            source.get_connection(f"copy {spec.name}", readonly=True) as source_conn,
            target.get_connection(f"load {spec.name}") as target_conn,
        ):
            result = run(spec, source_conn, target_conn, log=context.log)
        context.log.info(
            "`%s`: %d rows copied (%.0f rows/s), %d inserted, %d updated, %d deleted",
            result.table,
            result.rows_copied,
            result.copy_rows_per_second,
            result.inserted,
            result.updated,
            result.deleted,
        )
        return MaterializeResult(metadata=result_metadata(result))

    return _sync
