"""The code location module (`dagster ... -m pg_sync_assets.definitions`): the table
list named by PG_SYNC_CONFIG -> `defs`.

When definitions load, the table list is parsed (bad entries fail the load with a
message naming the file, the entry and the key). No connection is opened: a code
location must load while a database is down, and every step process loads it again.
Without PG_SYNC_CONFIG the bundled demo list loads, but only where no
PG_SYNC_SOURCE_URL is set (see `config.config_path`).
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions

from .build import build_defs
from .config import config_path
from .launch import MODULE


def build_definitions(config_file: Path | str | None = None) -> Definitions:
    return build_defs(Path(config_file or config_path()), launcher=MODULE)


defs = build_definitions()
