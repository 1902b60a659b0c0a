"""Asset checks `row_count` and `checksum` for each table asset.

One check op per table computes both (one count-and-checksum query on each side) and
reports the two results. Both sides use the same scope (`where`); a failed check shows
both sides' figures. Checks run after each materialization and alone in `verify_all`.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    multi_asset_check,
)

from .assets import SOURCE_RESOURCE, TARGET_RESOURCE, table_asset_key
from .engine import TableSpec
from .engine.verify import TableComparison, compare_table


def _scope(spec: TableSpec) -> str:
    return f"WHERE {spec.where}" if spec.where else "whole table"


def _result(
    spec: TableSpec, check: str, passed: bool, metadata: dict, description: str | None
) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=table_asset_key(spec),
        check_name=check,
        passed=passed,
        metadata=metadata,
        description=description,
    )


def row_count_result(spec: TableSpec, cmp: TableComparison) -> AssetCheckResult:
    metadata = {"source_rows": cmp.source.rows, "scope": _scope(spec)}
    if cmp.target is None:
        return _result(spec, "row_count", False, metadata, cmp.problem)
    metadata.update(target_rows=cmp.target.rows, difference=cmp.target.rows - cmp.source.rows)
    description = (
        f"{cmp.source.rows} rows in source and target ({_scope(spec)})"
        if cmp.rows_match
        else f"source has {cmp.source.rows} rows, target has {cmp.target.rows} "
        f"({_scope(spec)}); re-materialize `{spec.name}` to repair"
    )
    return _result(spec, "row_count", cmp.rows_match, metadata, description)


def checksum_result(spec: TableSpec, cmp: TableComparison) -> AssetCheckResult:
    metadata = {
        "source_checksum": cmp.source.checksum_hex,
        "source_rows": cmp.source.rows,
        "columns": len(cmp.columns),
        "scope": _scope(spec),
    }
    if cmp.target is None:
        return _result(spec, "checksum", False, metadata, cmp.problem)
    metadata.update(target_checksum=cmp.target.checksum_hex, target_rows=cmp.target.rows)
    if cmp.checksums_match:
        description = f"checksums match over {len(cmp.columns)} columns ({_scope(spec)})"
    else:
        description = (
            f"checksums differ: source {cmp.source.checksum_hex} ({cmp.source.rows} rows), "
            f"target {cmp.target.checksum_hex} ({cmp.target.rows} rows), {_scope(spec)}; "
            f"re-materialize `{spec.name}` to repair"
        )
    return _result(spec, "checksum", cmp.checksums_match, metadata, description)


def build_table_checks(spec: TableSpec) -> AssetChecksDefinition:
    key = table_asset_key(spec)

    @multi_asset_check(
        name=f"{spec.name}_checks",
        specs=[
            AssetCheckSpec(
                "row_count",
                asset=key,
                blocking=True,
                description="source and target have the same number of rows in scope",
            ),
            AssetCheckSpec(
                "checksum",
                asset=key,
                blocking=True,
                description="source and target rows in scope are identical, column by column",
            ),
        ],
        required_resource_keys={SOURCE_RESOURCE, TARGET_RESOURCE},
    )
    def _checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        source = getattr(context.resources, SOURCE_RESOURCE)
        target = getattr(context.resources, TARGET_RESOURCE)
        with (
            source.get_connection(f"verify {spec.name}", readonly=True) as source_conn,
            target.get_connection(f"verify {spec.name}", readonly=True) as target_conn,
        ):
            comparison = compare_table(spec, source_conn, target_conn)
        yield row_count_result(spec, comparison)
        yield checksum_result(spec, comparison)

    return _checks
