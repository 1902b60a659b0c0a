"""Asset checks `row_count` and `checksum` for each table asset.

One check op per table computes both (one count-and-checksum query on each side) and
reports the two results. Both sides use the same scope (`where`); a failed check shows
both sides' figures. Checks run after each materialization and alone in `verify_all`.
"""

from collections.abc import Iterator
from decimal import Decimal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    Failure,
    multi_asset_check,
)

from .assets import SOURCE_RESOURCE, TARGET_RESOURCE, table_asset_key
from .definition_names import checks_op, reconcile_job
from .engine import Mode, TableSpec
from .engine.errors import ConfigError
from .engine.localize import Difference, localize_table
from .engine.verify import ScopeChecksum, TableComparison, compare_table, null_cursor_count


def _scope(spec: TableSpec, cmp: TableComparison) -> str:
    """The rows compared: the `where` scope, narrowed to the run's window if it had one."""
    parts = [f"WHERE {spec.where}"] if spec.where else []
    if cmp.window:
        parts.append(f"`{spec.incremental_column}` in {cmp.window}")
    return ", ".join(parts) or "whole table"


def this_runs_materialization(context: AssetCheckExecutionContext, spec: TableSpec) -> dict | None:
    """Metadata of the asset's materialization in this very run, if there is one."""
    event = context.instance.get_latest_materialization_event(table_asset_key(spec))
    if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def verified_in_this_run(md: dict | None) -> TableComparison | None:
    """The comparison the materialization of this run made before its commit, if any.

    That comparison used the very snapshot the copy read (and, for an incremental table,
    the run's window), so on a busy source it is the one that proves the copy; a fresh
    query now would compare against a source that has moved on. Without a
    materialization in this run, the checks compare live, over the whole scope.
    """
    if md is None or "verified_source_checksum" not in md:
        return None

    def scope(rows: int, checksum_hex: str) -> ScopeChecksum:
        return ScopeChecksum(rows, Decimal(int(checksum_hex, 16)))

    window = md.get("window")
    return TableComparison(
        source=scope(md["verified_source_rows"], md["verified_source_checksum"]),
        target=scope(md["verified_target_rows"], md["verified_target_checksum"]),
        columns=tuple(c.name for c in md["dagster/column_schema"].columns),
        basis="verified inside the materialization, against the source snapshot it copied",
        window=window,
    )


def null_cursor_result(
    context: AssetCheckExecutionContext, spec: TableSpec, md: dict | None
) -> AssetCheckResult:
    """Warn about rows whose incremental column is NULL: no hourly window reaches them."""
    if md is not None and md.get("rows_with_null_cursor") is not None:
        rows = md["rows_with_null_cursor"]
    else:
        with getattr(context.resources, SOURCE_RESOURCE).get_connection(
            f"verify {spec.name}", readonly=True
        ) as source_conn:
            rows = null_cursor_count(source_conn, spec)
    description = (
        "every source row in scope has a value in the incremental column"
        if rows == 0
        else f"{rows} source rows have `{spec.incremental_column}` NULL: no hourly window loads them; "
        f"include them with a reconcile (`reconcile: true`) or a `merge` table with a `where` on them"
    )
    return AssetCheckResult(
        asset_key=table_asset_key(spec),
        check_name="null_cursor",
        passed=rows == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"rows_with_null_cursor": rows},
        description=description,
    )


def _localize(
    context: AssetCheckExecutionContext, spec: TableSpec, cmp: TableComparison
) -> Difference | None:
    source = getattr(context.resources, SOURCE_RESOURCE)
    target = getattr(context.resources, TARGET_RESOURCE)
    try:
        with (
            source.get_connection(f"localize {spec.name}", readonly=True) as source_conn,
            target.get_connection(f"localize {spec.name}", readonly=True) as target_conn,
        ):
            return localize_table(spec, source_conn, target_conn, cmp.source.rows, SHOWN_KEYS)
    except ConfigError as exc:  # no key: the figures alone must do
        context.log.warning("differences of `%s` not localized: %s", spec.target, exc)
        return None


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


SHOWN_KEYS = 20


CLI = "dagster {verb} -m pg_sync_assets.definitions"


def repair_hint(spec: TableSpec, keyed: bool = True) -> str:
    """The command that repairs this table, for its kind (and `reconcile_all`, which fits all)."""
    if not keyed:
        return (
            f"`{spec.target}` has no key, so the differing rows cannot be named; copy the whole scope "
            f"again: `{CLI.format(verb='asset materialize')} --select {spec.name}`"
        )
    if spec.mode is Mode.INCREMENTAL:
        return (
            "to repair only the differing rows of the whole table run "
            f"`{CLI.format(verb='job execute')} -j {reconcile_job(spec)}`"
        )
    return (
        f"to repair only the differing rows run `{CLI.format(verb='job execute')} -j reconcile_all` "
        f"(every table) or `{CLI.format(verb='asset materialize')} --select {spec.name} --config-json "
        f'\'{{"ops": {{"{spec.name}": {{"config": {{"reconcile": true}}}}}}}}\'` (this table)'
    )


def describe_difference(diff: Difference | None) -> tuple[dict, str]:
    """Metadata and one sentence about which keys differ."""
    if diff is None:
        return {}, ""
    parts = []
    for kind, label in (
        ("missing", "missing in target"),
        ("extra", "extra in target"),
        ("changed", "changed"),
    ):
        count, keys = getattr(diff, f"{kind}_count"), getattr(diff, kind)
        if count:
            more = f", +{count - len(keys)} more" if count > len(keys) else ""
            parts.append(f"{label}: {count} [{', '.join(keys)}{more}]")
    metadata = {
        "rows_missing_in_target": diff.missing_count,
        "rows_extra_in_target": diff.extra_count,
        "rows_changed": diff.changed_count,
        "differing_keys": diff.missing + diff.extra + diff.changed,
    }
    return metadata, "; ".join(parts) + "; " if parts else ""


def _what_differs(spec: TableSpec, diff: Difference | None, metadata: dict, keyed: bool) -> str:
    """Add the differing keys to `metadata`; the sentence naming them and the repair."""
    diff_metadata, keys = describe_difference(diff)
    metadata.update(diff_metadata)
    return keys + repair_hint(spec, keyed)


def row_count_result(
    spec: TableSpec, cmp: TableComparison, diff: Difference | None = None, keyed: bool = True
) -> AssetCheckResult:
    metadata = {"source_rows": cmp.source.rows, "scope": _scope(spec, cmp), "compared": cmp.basis}
    if cmp.target is None:
        return _result(spec, "row_count", False, metadata, cmp.problem)
    metadata.update(target_rows=cmp.target.rows, difference=cmp.target.rows - cmp.source.rows)
    if cmp.rows_match:
        description = f"{cmp.source.rows} rows in source and target ({_scope(spec, cmp)})"
    else:
        description = (
            f"source has {cmp.source.rows} rows, target has {cmp.target.rows} ({_scope(spec, cmp)}); "
            + _what_differs(spec, diff, metadata, keyed)
        )
    return _result(spec, "row_count", cmp.rows_match, metadata, description)


def checksum_result(
    spec: TableSpec, cmp: TableComparison, diff: Difference | None = None, keyed: bool = True
) -> AssetCheckResult:
    metadata = {
        "source_checksum": cmp.source.checksum_hex,
        "source_rows": cmp.source.rows,
        "columns": len(cmp.columns),
        "scope": _scope(spec, cmp),
        "compared": cmp.basis,
    }
    if cmp.target is None:
        return _result(spec, "checksum", False, metadata, cmp.problem)
    metadata.update(target_checksum=cmp.target.checksum_hex, target_rows=cmp.target.rows)
    if cmp.checksums_match:
        description = f"checksums match over {len(cmp.columns)} columns ({_scope(spec, cmp)})"
    else:
        description = (
            f"checksums differ: source {cmp.source.checksum_hex} ({cmp.source.rows} rows), "
            f"target {cmp.target.checksum_hex} ({cmp.target.rows} rows), {_scope(spec, cmp)}; "
            + _what_differs(spec, diff, metadata, keyed)
        )
    return _result(spec, "checksum", cmp.checksums_match, metadata, description)


def build_table_checks(spec: TableSpec) -> AssetChecksDefinition:
    key = table_asset_key(spec)

    @multi_asset_check(
        name=checks_op(spec),
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
            *(
                [
                    AssetCheckSpec(
                        "null_cursor",
                        asset=key,
                        description="no source row has a NULL incremental column (a warning)",
                    )
                ]
                if spec.mode is Mode.INCREMENTAL
                else []
            ),
        ],
        required_resource_keys={SOURCE_RESOURCE, TARGET_RESOURCE},
    )
    def _checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        materialization = this_runs_materialization(context, spec)
        comparison = verified_in_this_run(materialization)
        if comparison is None:
            source = getattr(context.resources, SOURCE_RESOURCE)
            target = getattr(context.resources, TARGET_RESOURCE)
            with (
                source.get_connection(f"verify {spec.name}", readonly=True) as source_conn,
                target.get_connection(f"verify {spec.name}", readonly=True) as target_conn,
            ):
                comparison = compare_table(spec, source_conn, target_conn)
        diff, keyed = None, True
        if comparison.target is not None and not comparison.checksums_match:
            diff = _localize(context, spec, comparison)
            keyed = diff is not None
        results = [
            row_count_result(spec, comparison, diff, keyed),
            checksum_result(spec, comparison, diff, keyed),
        ]
        yield from results
        if spec.mode is Mode.INCREMENTAL:
            yield null_cursor_result(context, spec, materialization)
        failed = [r for r in results if not r.passed]
        if failed:
            # Failing the step ourselves puts this summary in the run's last lines (the
            # CLI's and the UI's), instead of Dagster's generic "blocking checks failed".
            raise Failure(description=failure_summary(spec, failed))

    return _checks


def failure_summary(spec: TableSpec, failed: list[AssetCheckResult]) -> str:
    """Which table, which checks, which keys, and the repair: the failure's last words."""
    lines = [f"`{spec.target}` (asset `{spec.name}`) differs from the source:"]
    lines += [f"- {r.check_name}: {r.description}" for r in failed]
    return "\n".join(lines)
