"""pg_sync_assets: keep PostgreSQL tables in sync, as Dagster assets with proven copies.

`build_defs` and `TableSyncComponent` are imported on first use, so that importing the
engine (`pg_sync_assets.engine`, plain Python + psycopg2) does not import Dagster.
Importing any module opens no connection and reads no file its caller did not name.
"""

from __future__ import annotations

__all__ = ["TableSyncComponent", "build_defs"]


def __getattr__(name: str):
    if name == "build_defs":
        from .build import build_defs

        return build_defs
    if name == "TableSyncComponent":
        from .component import TableSyncComponent

        return TableSyncComponent
    raise AttributeError(f"module 'pg_sync_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
