"""The Dagster side of a snapshot group (`snapshot_group: NAME`, `engine/run/group.py`): one
step for all its tables, a multi-asset that can still run any subset of them (the
selected members are synced together, in one snapshot and one transaction), with every
member's own checks."""

# No `from __future__ import annotations`: Dagster reads the run config class from the
# op's annotations at definition time.
from dataclasses import replace

from dagster import AssetExecutionContext, AssetsDefinition, Failure, multi_asset

from .assets import NOT_TRANSIENT, SyncRunConfig, materialize_result, retry_policy, table_asset_spec
from .cdc_assets import member_connections, run_cdc_group
from .checks import evaluate_checks, fail_step, table_check_specs
from .definition_names import asset_op
from .engine import reconcile_table
from .engine.run.group import sync_group
from .keys import SOURCE_POOL, resources_of, table_asset_key
from .locations import session_location
from .project import TableEntry


def build_group_asset(group: str, entries: list[TableEntry]) -> AssetsDefinition:
    """One step syncing the selected members of `group` as one snapshot group."""
    first = entries[0]

    @multi_asset(
        name=asset_op(first),
        specs=[table_asset_spec(e) for e in entries],
        check_specs=[c for e in entries for c in table_check_specs(e)],
        can_subset=True,
        required_resource_keys={first.source_connection, first.target_connection, *member_connections(first)},
        retry_policy=retry_policy(first.retries),
        pool=SOURCE_POOL,
    )
    def _group(context: AssetExecutionContext, config: SyncRunConfig):
        selected = [e for e in entries if table_asset_key(e) in context.selected_asset_keys]
        results = dict(zip((e.name for e in selected), _sync(context, selected, config), strict=True))
        for entry in selected:
            yield materialize_result(context, entry, results[entry.name])
        failures: list[str] = []
        for entry in entries:  # every member's checks report, then the step fails if any did
            yield from evaluate_checks(context, entry, results.get(entry.name), failures)
        fail_step(failures)

    return _group


def _sync(context: AssetExecutionContext, selected: list[TableEntry], config: SyncRunConfig) -> list:
    if not selected:
        return []
    source, target = resources_of(context, selected[0])
    label = ", ".join(e.name for e in selected)
    try:
        with (
            source.get_connection(f"copy {label}", readonly=True) as source_conn,
            target.get_connection(f"load {label}") as target_conn,
        ):
            location = session_location(target_conn)
            if selected[0].feed is not None and not config.reconcile:  # cdc: the changes, together
                results = run_cdc_group(context, selected, source_conn, target_conn)
            elif config.reconcile:  # a repair, table by table: each compares its own tables
                results = [
                    reconcile_table(e.spec, source_conn, target_conn, log=context.log) for e in selected
                ]
            else:
                results = sync_group([e.spec for e in selected], source_conn, target_conn, log=context.log)
            return [replace(r, target_location=location) for r in results]
    except NOT_TRANSIENT as exc:
        error = Failure(description=str(exc), allow_retries=False)
    raise error
