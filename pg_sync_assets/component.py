"""`TableSyncComponent`: the table list as a Dagster Component, for `dg` projects.

A `defs.yaml` with `type: pg_sync_assets.TableSyncComponent` holds the same content as
a table list file (`connections`, `defaults`, `tables`, `schedules`, `name`) under
`attributes:`. The attributes are checked by the same parser as the file (errors name
the defs.yaml, the entry and the key). `name` prefixes the instance's job and
schedule names and defaults to the instance's folder name, so that several instances
live in one project without colliding (`defs/shop` -> `shop_sync_all`).
"""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
from pydantic import Field

from .build import build_defs

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")

SCAFFOLD = {
    "connections": {
        "shop": {"url": {"env": "SHOP_DATABASE_URL"}},
        "warehouse": {"url": {"env": "WAREHOUSE_DATABASE_URL"}},
    },
    "defaults": {"source_connection": "shop", "target_connection": "warehouse"},
    "tables": [{"source": "public.orders", "target": "shop.orders", "mode": "merge"}],
}


class TableSyncScaffolder(dg.Scaffolder):
    """`dg scaffold defs pg_sync_assets.TableSyncComponent NAME`: a defs.yaml with one
    table and two connections read from the environment, to edit."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, SCAFFOLD)


@dg.scaffold_with(TableSyncScaffolder)
class TableSyncComponent(dg.Component, dg.Model, dg.Resolvable):
    """Keeps PostgreSQL tables in sync: one asset per table (with row_count and checksum
    checks), jobs and schedules, and one resource per named connection."""

    tables: list[dict[str, Any]] = Field(description="The table entries, as in a table list file.")
    connections: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="name -> {url: ...} or fields; any value may be {env: VAR}. Default: `source` "
        "and `target` from PG_SYNC_SOURCE_URL / PG_SYNC_TARGET_URL.",
    )
    defaults: dict[str, Any] | None = Field(default=None, description="Keys every table entry inherits.")
    schedules: dict[str, Any] | None = Field(default=None, description="running, minute_of_hour, daily_cron.")
    name: str | None = Field(
        default=None,
        description="Prefix of the job and schedule names (default: the folder of this defs.yaml).",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        name = self.name or _NOT_NAME.sub("_", context.path.name).strip("_") or None
        document = {
            "name": name,
            "tables": self.tables,
            **{k: v for k, v in (("connections", self.connections), ("defaults", self.defaults)) if v},
            **({"schedules": self.schedules} if self.schedules is not None else {}),
        }
        return build_defs(document, source_name=str(context.path / "defs.yaml"))
