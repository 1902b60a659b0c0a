"""Asset checks `row_count` and `checksum` (and `null_cursor` for incremental tables).

The table's asset declares them and evaluates them in its own step (`assets.py`): one
step per table, not two. In a step that syncs the table, they report the comparison
the sync made before its commit, against the source snapshot it copied; in a step that
runs the checks alone (`verify_all`, or a check run from the UI), they compare live,
one count-and-checksum query on each side. Both sides use the same scope (`where`, and
an incremental run's window); a failed check shows both sides' figures and the keys.
"""

from collections.abc import Iterator
from datetime import timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
)

from .cdc_assets import LAG_CHECK, lag_check_spec, lag_result
from .definition_names import Names, asset_op
from .engine import Mode, SyncResult, TableSpec
from .engine.cdc.compare import compare_cdc_table
from .engine.compare.localize import Difference, localize_table
from .engine.errors import ConfigError
from .engine.run.cdc import APPLIED
from .engine.verify.verify import ScopeChecksum, TableComparison, compare_table, null_cursor_count
from .keys import resources_of, table_asset_key
from .project import TableEntry


def _scope(spec: TableSpec, cmp: TableComparison) -> str:
    """The rows compared: the `where` scope, narrowed to the run's window if it had one."""
    if cmp.scope is not None:
        return cmp.scope
    parts = [f"WHERE {spec.where}"] if spec.where else []
    if cmp.window:
        parts.append(f"`{spec.incremental_column}` in {cmp.window}")
    return ", ".join(parts) or "whole table"


def compared_window(result: SyncResult) -> str:
    """The rows a windowed run copied and compared: its partitions plus the lookback."""
    assert result.window is not None
    start = result.window.start - timedelta(hours=result.lookback)
    text = f"[{start.isoformat()}, {result.window.end.isoformat()})"
    if result.lookback:
        text += f", the partitions' window plus {result.lookback} h lookback"
    return text


def verified_by_sync(result: SyncResult | None) -> TableComparison | None:
    """The comparison a sync in this step made before its commit, if it made one.

    That comparison used the very snapshot the copy read (and, for an incremental table,
    the run's window), so on a busy source it is the one that proves the copy; a fresh
    query now would compare against a source that has moved on. Without it, the checks
    compare live, over the whole scope.
    """
    if result is None or result.verification is None:
        return None
    v = result.verification
    if result.method == APPLIED:  # a cdc run proves the rows its changes touched
        return TableComparison(
            source=v.source,
            target=v.final,
            columns=tuple(result.plan.column_names),
            basis="verified inside the materialization, against the decoded changes it applied; "
            "verify_all compares the whole table",
            scope=v.final_scope,
        )
    return TableComparison(
        source=v.source,
        target=ScopeChecksum(v.final.rows + v.rows_only_in_target, v.final.checksum),
        columns=tuple(result.plan.column_names),
        basis="verified inside the materialization, against the source snapshot it copied",
        window=compared_window(result) if result.window is not None else _cursor_range(result),
    )


def _cursor_range(result: SyncResult) -> str | None:
    """An integer cursor's synced range, `(floor, ∞)`; None when every row was synced."""
    return None if result.cursor_after is None else f"({result.cursor_after}, ∞)"


def null_cursor_result(
    context: AssetExecutionContext, entry: TableEntry, result: SyncResult | None
) -> AssetCheckResult:
    """Warn about rows whose incremental column is NULL: no hourly window reaches them."""
    spec = entry.spec
    if result is not None and result.null_cursor_rows is not None:
        rows = result.null_cursor_rows
    else:
        source, _ = resources_of(context, entry)
        with source.get_connection(f"verify {spec.name}", readonly=True) as source_conn:
            rows = null_cursor_count(source_conn, spec)
    description = (
        "every source row in scope has a value in the incremental column"
        if rows == 0
        else f"{rows} source rows have `{spec.incremental_column}` NULL: no "
        + ("hourly window" if spec.hourly else "run")
        + " loads them; "
        "include them with a reconcile (`reconcile: true`) or a `merge` table with a `where` on them"
    )
    return AssetCheckResult(
        asset_key=table_asset_key(entry),
        check_name="null_cursor",
        passed=rows == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"rows_with_null_cursor": rows},
        description=description,
    )


def _localize(context: AssetExecutionContext, entry: TableEntry, cmp: TableComparison) -> Difference | None:
    spec = entry.spec
    source, target = resources_of(context, entry)
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
    entry: TableEntry, check: str, passed: bool, metadata: dict, description: str | None
) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=table_asset_key(entry),
        check_name=check,
        passed=passed,
        metadata=metadata,
        description=description,
    )


SHOWN_KEYS = 20


def repair_hint(entry: TableEntry, keyed: bool = True) -> str:
    """The command that repairs this table, for its kind (and `reconcile_all`, which fits
    all), as launched where the definitions were loaded (`launch.py`)."""
    spec, names, selection = entry.spec, Names.of(entry.list_name), "/".join(entry.key_path)
    launch = entry.launcher
    if not keyed:
        return (
            f"`{spec.target}` has no key, so the differing rows cannot be named; copy the whole scope "
            f"again: {launch.materialize(selection)}"
        )
    if spec.hourly:
        job = launch.run_job(names.reconcile_job(entry))
        return f"to repair only the differing rows of the whole table run {job}"
    config = f'{{"ops": {{"{asset_op(entry)}": {{"config": {{"reconcile": true}}}}}}}}'
    this_table = launch.materialize(selection, config)
    if entry.feed is not None:
        return f"to repair only the differing rows run {this_table}; later runs go on applying changes"
    return (
        f"to repair only the differing rows run {launch.run_job(names.reconcile_all)} "
        f"(every table) or {this_table} (this table)"
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


def _what_differs(entry: TableEntry, diff: Difference | None, metadata: dict, keyed: bool) -> str:
    """Add the differing keys to `metadata`; the sentence naming them and the repair."""
    diff_metadata, keys = describe_difference(diff)
    metadata.update(diff_metadata)
    return keys + repair_hint(entry, keyed)


def row_count_result(
    entry: TableEntry, cmp: TableComparison, diff: Difference | None = None, keyed: bool = True
) -> AssetCheckResult:
    spec = entry.spec
    metadata = {"source_rows": cmp.source.rows, "scope": _scope(spec, cmp), "compared": cmp.basis}
    if cmp.target is None:
        return _result(entry, "row_count", False, metadata, cmp.problem)
    metadata.update(target_rows=cmp.target.rows, difference=cmp.target.rows - cmp.source.rows)
    if cmp.rows_match:
        description = f"{cmp.source.rows} rows in source and target ({_scope(spec, cmp)})"
    else:
        description = (
            f"source has {cmp.source.rows} rows, target has {cmp.target.rows} ({_scope(spec, cmp)}); "
            + _what_differs(entry, diff, metadata, keyed)
        )
    return _result(entry, "row_count", cmp.rows_match, metadata, description)


def checksum_result(
    entry: TableEntry, cmp: TableComparison, diff: Difference | None = None, keyed: bool = True
) -> AssetCheckResult:
    spec = entry.spec
    metadata = {
        "source_checksum": cmp.source.checksum_hex,
        "source_rows": cmp.source.rows,
        "columns": len(cmp.columns),
        "scope": _scope(spec, cmp),
        "compared": cmp.basis,
    }
    if cmp.target is None:
        return _result(entry, "checksum", False, metadata, cmp.problem)
    metadata.update(target_checksum=cmp.target.checksum_hex, target_rows=cmp.target.rows)
    if cmp.checksums_match:
        description = f"checksums match over {len(cmp.columns)} columns ({_scope(spec, cmp)})"
    else:
        description = (
            f"checksums differ: source {cmp.source.checksum_hex} ({cmp.source.rows} rows), "
            f"target {cmp.target.checksum_hex} ({cmp.target.rows} rows), {_scope(spec, cmp)}; "
            + _what_differs(entry, diff, metadata, keyed)
        )
    return _result(entry, "checksum", cmp.checksums_match, metadata, description)


def table_check_specs(entry: TableEntry) -> list[AssetCheckSpec]:
    """The checks a table's asset declares (and evaluates in its own step)."""
    key = table_asset_key(entry)
    specs = [
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
    ]
    if entry.feed is not None:
        specs.append(lag_check_spec(entry))
    if entry.spec.mode is Mode.INCREMENTAL:
        specs.append(
            AssetCheckSpec(
                "null_cursor",
                asset=key,
                description="no source row has a NULL incremental column (a warning)",
            )
        )
    return specs


def evaluate_checks(
    context: AssetExecutionContext, entry: TableEntry, result: SyncResult | None, failures: list[str]
) -> Iterator[AssetCheckResult]:
    """The selected checks of `entry`: from `result`'s pre-commit comparison when this step
    synced the table with verification, else compared live. A failure's summary is added
    to `failures`: the step evaluates every table's checks before `fail_step` ends it."""
    spec = entry.spec
    key = table_asset_key(entry)  # a snapshot group's step holds the checks of several tables
    selected = {k.name for k in context.selected_asset_check_keys if k.asset_key == key}
    results = []
    if selected & {"row_count", "checksum"}:
        comparison = verified_by_sync(result)
        if comparison is None:
            source, target = resources_of(context, entry)
            with (
                source.get_connection(f"verify {spec.name}", readonly=True) as source_conn,
                target.get_connection(f"verify {spec.name}", readonly=True) as target_conn,
            ):
                if entry.feed is not None:
                    comparison = compare_cdc_table(spec, source_conn, target_conn, entry.feed)
                else:
                    comparison = compare_table(spec, source_conn, target_conn)
        diff, keyed = None, True
        if comparison.target is not None and not comparison.checksums_match:
            diff = _localize(context, entry, comparison)
            keyed = diff is not None
        results = [
            r
            for r in (
                row_count_result(entry, comparison, diff, keyed),
                checksum_result(entry, comparison, diff, keyed),
            )
            if r.check_name in selected
        ]
        yield from results
    if "null_cursor" in selected:
        yield null_cursor_result(context, entry, result)
    if LAG_CHECK in selected:
        lag = lag_result(context, entry)
        results.append(lag)
        yield lag
    failed = [r for r in results if not r.passed]
    if failed:
        failures.append(failure_summary(spec, failed))


def fail_step(failures: list[str]) -> None:
    """End the step if any table's checks failed.

    Failing the step ourselves puts the summaries in the run's last lines (the CLI's and
    the UI's), instead of Dagster's generic "blocking checks failed". Not retried: a retry
    policy is for faults that pass; a difference waits for a repair."""
    if failures:
        raise Failure(description="\n".join(failures), allow_retries=False)


def failure_summary(spec: TableSpec, failed: list[AssetCheckResult]) -> str:
    """Which table, which checks, which keys, and the repair: the failure's last words."""
    lines = [f"`{spec.target}` (asset `{spec.name}`) differs from the source:"]
    lines += [f"- {r.check_name}: {r.description}" for r in failed]
    return "\n".join(lines)
