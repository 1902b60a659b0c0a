"""`TableSyncComponent`: the table list as a Dagster Component, for `dg` projects.

A `defs.yaml` with `type: pg_sync_assets.TableSyncComponent` holds the same content as
a table list file (`connections`, `defaults`, `tables`, `schedules`, `name`) under
`attributes:`. The attributes are typed (`component_models.py`): `dg check yaml` reports
an unknown key with its line; their values are then checked by the same parser as the
file (errors name the defs.yaml, the entry and the key). `name` prefixes the instance's job and
schedule names and defaults to the instance's folder name, so that several instances
live in one project without colliding (`defs/shop` -> `shop_sync_all`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import dagster as dg
import yaml
from dagster.components import DefsStateConfig, DefsStateConfigArgs, ResolvedDefsStateConfig
from pydantic import Field

from .build import build_defs
from .component_models import Attributes, Connections, DefaultsAttr, SchedulesAttr, Tables
from .engine.errors import ConfigError
from .launch import DG_LAUNCH
from .patterns import pattern_entries, write_state

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")

SCAFFOLD = {
    "connections": {
        "shop": {"url": "{{ env.SHOP_DATABASE_URL }}"},
        "warehouse": {"url": "{{ env.WAREHOUSE_DATABASE_URL }}"},
    },
    "defaults": {"source_connection": "shop", "target_connection": "warehouse"},
    "tables": [{"source": "public.orders", "target": "shop.orders", "mode": "merge"}],
}


class TableSyncScaffolder(dg.Scaffolder):
    """`dg scaffold defs pg_sync_assets.TableSyncComponent NAME`: a defs.yaml with one
    table and two connections read from the environment, to edit."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, SCAFFOLD)
        # Declare the variables it reads, so `dg list env` and `dg check yaml` know them.
        path = Path(request.target_path) / "defs.yaml"
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        document["requirements"] = {"env": ["SHOP_DATABASE_URL", "WAREHOUSE_DATABASE_URL"]}
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")


@dg.scaffold_with(TableSyncScaffolder)
class TableSyncComponent(dg.StateBackedComponent, dg.Model, dg.Resolvable):
    """Keeps PostgreSQL tables in sync: one asset per table (with row_count and checksum
    checks), jobs and schedules, and one resource per named connection. Pattern entries
    (`source: shop.*`) expand from the component's state, which `dg utils
    refresh-defs-state` writes by listing the matching tables (`dg dev` refreshes it on
    load); loading reads only that state, never a database."""

    tables: Tables = Field(description="The table entries, as in a table list file.")
    connections: Connections = Field(
        default=None,
        description='name -> {url: ...} or fields; any value may be "{{ env.VAR }}" (or {env: VAR}), '
        "read when a session opens. Default: `source` and `target` from PG_SYNC_SOURCE_URL / "
        "PG_SYNC_TARGET_URL.",
    )
    defaults: DefaultsAttr = Field(default=None, description="Keys every table entry inherits.")
    schedules: SchedulesAttr = Field(default=None, description="When the jobs' schedules tick.")
    name: str | None = Field(
        default=None,
        description="Prefix of the job and schedule names (default: the folder of this defs.yaml).",
    )
    defs_state: ResolvedDefsStateConfig = Field(
        default_factory=DefsStateConfigArgs.local_filesystem,
        description="Where the pattern entries' table listing is kept (Dagster's defs state).",
    )

    @classmethod
    def get_model_cls(cls):
        return Attributes

    @property
    def defs_state_config(self) -> DefsStateConfig:
        text = json.dumps(
            [self.name, self.tables, self.connections, self.defaults], sort_keys=True, default=str
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return DefsStateConfig.from_args(
            self.defs_state, default_key=f"TableSyncComponent[{self.name or digest}]"
        )

    def _document(self, name: str | None) -> dict:
        return {
            "name": name,
            "tables": self.tables,  # each attribute resolved to plain data (`component_models.plain`)
            **({"connections": self.connections} if self.connections else {}),
            **({"defaults": self.defaults} if self.defaults is not None else {}),
            **({"schedules": self.schedules} if self.schedules is not None else {}),
        }

    def write_state_to_path(self, state_path: Path) -> None:
        """`dg utils refresh-defs-state`: list the tables of the pattern entries."""
        lines: list[str] = []
        document = self._document(self.name)
        if write_state(document, "the TableSyncComponent's attributes", state_path, lines.append):
            raise ConfigError("\n".join(lines))

    def build_defs_from_state(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> dg.Definitions:
        name = self.name or _NOT_NAME.sub("_", context.path.name).strip("_") or None
        document = self._document(name)
        where = str(context.path / "defs.yaml")
        if state_path is None and pattern_entries(document):
            raise ConfigError(
                f"`{where}`: its pattern entries expand from the component's state, which has not been "
                "written yet: run `dg utils refresh-defs-state` (`dg dev` refreshes it when it loads)"
            )
        return build_defs(
            document,
            source_name=where,
            launcher=DG_LAUNCH,
            owns_source=_first_claim(context),
            state_file=state_path,
        )


# Per component tree (one load of a project): which instance declares each source table's
# external asset. Instances reading one table through one connection name would otherwise
# each declare it, with their own file in its code references, and Dagster refuses specs
# that differ; the first instance to load declares it, the others depend on it.
# Keyed by the tree's id, holding the tree (its id cannot be reused while held); the last
# few loads only.
_declared: dict[int, tuple[object, dict]] = {}
_KEPT_LOADS = 8


def _first_claim(context: dg.ComponentLoadContext):
    tree = context.component_tree
    if id(tree) not in _declared:
        while len(_declared) >= _KEPT_LOADS:
            _declared.pop(next(iter(_declared)))
        _declared[id(tree)] = (tree, {})
    claims = _declared[id(tree)][1]
    me = str(context.path)

    def owns(key: dg.AssetKey) -> bool:
        return claims.setdefault(key, me) == me

    return owns
