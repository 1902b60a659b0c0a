"""Names the Dagster layer's modules share: resource keys, the source pool, asset keys."""

from dagster import AssetKey

from .engine import TableSpec

SOURCE_RESOURCE = "source"
TARGET_RESOURCE = "target"
# Steps that read the source database: limit them with
# `dagster instance concurrency set pg_sync_source N`.
SOURCE_POOL = "pg_sync_source"


def table_asset_key(spec: TableSpec) -> AssetKey:
    return AssetKey([spec.name])
