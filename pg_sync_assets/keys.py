"""Names the Dagster layer's modules share: the source pool, asset keys, resource keys."""

import hashlib

from dagster import AssetKey

from .engine import TableRef, TableSpec
from .engine.plan.user_sql import tables_read
from .naming import derive_asset_name
from .project import TableEntry

# Steps that read a source database: limit them with
# `dagster instance concurrency set pg_sync_source N`.
SOURCE_POOL = "pg_sync_source"


def table_asset_key(entry: TableEntry) -> AssetKey:
    """`[*key_prefix, name]`."""
    return AssetKey(list(entry.key_path))


def _key_part(name: str) -> str:
    """A name as an asset key part (`^[A-Za-z0-9_]+$`): romanized, or a stable hash."""
    return derive_asset_name(name) or "t_" + hashlib.sha256(name.encode()).hexdigest()[:10]


def source_asset_key(connection: str, table: TableRef) -> AssetKey:
    """The external asset of a source table: `<connection>/<schema>/<table>` (key-safe
    names; the real name is in its `dagster/table_name`)."""
    return AssetKey([connection, _key_part(table.schema), _key_part(table.name)])


def source_tables(spec: TableSpec) -> list[TableRef]:
    """What a table's copy reads in the source: its `source`, or the tables its `query` reads."""
    if spec.source is not None:
        return [spec.source]
    return [TableRef(schema, name) for schema, name in tables_read(spec.query or "")]


def resources_of(context, entry: TableEntry):
    """(source, target) PostgresResource of `entry`, from a step's context."""
    return getattr(context.resources, entry.source_connection), getattr(
        context.resources, entry.target_connection
    )
