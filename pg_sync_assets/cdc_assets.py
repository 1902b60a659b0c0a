"""The Dagster side of `mode: cdc`: the run of a table, the `cdc_lag` check, and the job
and schedule of each source connection (`cdc_<connection>`, every 5 minutes by default).

Everything PostgreSQL lives in the engine (`engine/run/cdc.py`, `engine/cdc/`); this
module opens the sessions through the connections' resources, reads the feed's member
positions from their targets (so the slot moves only as far as all have applied) and
turns lag into a check result.
"""

from __future__ import annotations

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSelection,
    DefaultScheduleStatus,
    MetadataValue,
    ScheduleDefinition,
    define_asset_job,
)

from .definition_names import Names
from .engine import SyncResult
from .engine.cdc.feed import current_position, slot_status
from .engine.cdc.pgoutput import lsn_text
from .engine.cdc.state import read_position, slot_positions
from .engine.run.cdc import sync_cdc_group
from .keys import resources_of, table_asset_key
from .project import Project, ScheduleSettings, TableEntry

LAG_CHECK = "cdc_lag"


def member_connections(entry: TableEntry) -> set[str]:
    """The target connections whose positions decide how far the slot may move."""
    return {connection for connection, _ in entry.feed_members}


def run_cdc(context: AssetExecutionContext, entry: TableEntry, source_conn, target_conn) -> SyncResult:
    return run_cdc_group(context, [entry], source_conn, target_conn)[0]


def run_cdc_group(
    context: AssetExecutionContext, entries: list[TableEntry], source_conn, target_conn
) -> list[SyncResult]:
    """`cdc` tables applied together (a snapshot group's selected members, or one table)."""
    entry = entries[0]

    def positions() -> dict:
        known: dict = {}
        by_connection: dict[str, list] = {}
        for connection, table in entry.feed_members:
            by_connection.setdefault(connection, []).append(table)
        for connection, tables in by_connection.items():
            resource = getattr(context.resources, connection)
            with resource.get_connection("cdc positions", readonly=True) as conn, conn.cursor() as cur:
                known.update(slot_positions(cur, entry.feed.slot, tables))
        return known

    specs = [e.spec for e in entries]
    return sync_cdc_group(
        specs, source_conn, target_conn, feed=entry.feed, positions=positions, log=context.log
    )


def cdc_metadata(result: SyncResult) -> dict:
    if result.cdc_position is None:
        return {}
    metadata = {"cdc_position": result.cdc_position}
    if result.cdc_from is not None:
        metadata.update(
            cdc_changes_after=result.cdc_from,
            cdc_changes_applied=result.rows_copied,
            cdc_source_transactions=result.cdc_transactions,
        )
    return metadata


def lag_check_spec(entry: TableEntry) -> AssetCheckSpec:
    return AssetCheckSpec(
        LAG_CHECK,
        asset=table_asset_key(entry),
        blocking=True,
        description=f"the source has written at most {entry.spec.cdc_max_lag_mb} MB of WAL since the "
        "position the target holds (`cdc_max_lag_mb`)",
    )


def lag_result(context: AssetExecutionContext, entry: TableEntry) -> AssetCheckResult:
    """How far the target is behind its source, in WAL bytes, and what the slot retains."""
    spec, feed = entry.spec, entry.feed
    source, target = resources_of(context, entry)
    with (
        source.get_connection(f"lag {spec.name}", readonly=True) as source_conn,
        target.get_connection(f"lag {spec.name}", readonly=True) as target_conn,
    ):
        with target_conn.cursor() as tcur:
            position = read_position(tcur, spec.target)
        with source_conn.cursor() as scur:
            now = current_position(scur)
            slot = slot_status(scur, feed)
        source_conn.rollback()
        target_conn.rollback()
    key = table_asset_key(entry)
    if position is None or position.slot != feed.slot:
        return AssetCheckResult(
            asset_key=key,
            check_name=LAG_CHECK,
            passed=False,
            metadata={"slot": feed.slot},
            description=f"`{spec.target}` holds no position of slot `{feed.slot}`: materialize it (the "
            "first run copies the table from the slot's snapshot)",
        )
    lag_mb = round(max(now - position.applied_lsn, 0) / 1e6, 3)
    metadata = {
        "lag_mb": lag_mb,
        "max_lag_mb": MetadataValue.text(str(spec.cdc_max_lag_mb)),  # a setting: not plotted
        "target_position": lsn_text(position.applied_lsn),
        "source_position": lsn_text(now),
        "applied_at": position.applied_at.isoformat(),
        "slot": feed.slot,
    }
    if slot.exists:
        metadata["slot_retained_wal_mb"] = round((slot.retained_bytes or 0) / 1e6, 3)
        metadata["slot_wal_status"] = slot.wal_status or "unknown"
    passed = slot.exists and lag_mb <= spec.cdc_max_lag_mb
    if not slot.exists:
        description = (
            f"the replication slot `{feed.slot}` is gone: the changes since {lsn_text(position.applied_lsn)} "
            "cannot be read; the next materialization copies the table again from a new slot"
        )
    elif passed:
        description = f"{lag_mb} MB of source WAL behind (at most {spec.cdc_max_lag_mb} MB)"
    else:
        description = (
            f"{lag_mb} MB of source WAL behind, over `cdc_max_lag_mb: {spec.cdc_max_lag_mb}`; the slot keeps "
            f"{metadata.get('slot_retained_wal_mb')} MB of WAL on the source; run the job "
            f"`{Names.of(entry.list_name).cdc_job(entry.source_connection)}` (is its schedule running?)"
        )
    return AssetCheckResult(
        asset_key=key,
        check_name=LAG_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def cdc_jobs(project: Project, settings: ScheduleSettings, status: DefaultScheduleStatus):
    """One job and schedule a source connection with `cdc` tables: `cdc_<connection>`."""
    names = Names.of(project.name)
    by_connection: dict[str, list[TableEntry]] = {}
    for entry in project.tables:
        if entry.feed is not None:
            by_connection.setdefault(entry.source_connection, []).append(entry)
    jobs, schedules = [], []
    for connection, entries in by_connection.items():
        job = define_asset_job(
            names.cdc_job(connection),
            selection=AssetSelection.assets(*(table_asset_key(e) for e in entries)),
            description=f"Apply the changes committed on connection `{connection}` to its `cdc` tables.",
        )
        jobs.append(job)
        schedules.append(
            ScheduleDefinition(
                name=names.cdc_schedule(connection),
                job=job,
                cron_schedule=settings.cdc_cron,
                execution_timezone="UTC",
                default_status=status,
            )
        )
    return jobs, schedules
