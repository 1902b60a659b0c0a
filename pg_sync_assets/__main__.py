"""`python -m pg_sync_assets check [--config FILE]`: list the tables of the list's
patterns (`patterns.py`, writes the state file), then check every table (`preflight.py`).

`python -m pg_sync_assets cdc-drop --connection NAME [--table SCHEMA.TABLE] [--config FILE]`:
drop a source connection's replication slot and publication (the server stops keeping WAL
for them), or take one table out of the publication."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import config_path, load_project, parse_yaml, read_table_list
from .engine import ConfigError
from .patterns import refresh_state
from .preflight import drop_feed_command, run_check


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pg_sync_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check every table of the list against both catalogs")
    check.add_argument("--config", help="the table list (default: PG_SYNC_CONFIG)")
    drop = commands.add_parser(
        "cdc-drop", help="drop a connection's replication slot and publication, or take a table out of it"
    )
    drop.add_argument("--connection", required=True, help="the source connection of the cdc tables")
    drop.add_argument("--table", help="schema.table: only take this table out of the publication")
    drop.add_argument("--config", help="the table list (default: PG_SYNC_CONFIG)")
    args = parser.parse_args(argv)
    if args.command == "cdc-drop":
        try:
            project = load_project(Path(args.config or config_path()))
        except ConfigError as exc:
            print(exc)
            return 2
        return drop_feed_command(project, args.connection, args.table, print)
    try:
        path = Path(args.config or config_path())
        status = refresh_state(parse_yaml(read_table_list(path), str(path)), path, print)
        if status:
            return status
        project = load_project(path)
    except ConfigError as exc:
        print(exc)
        return 2
    return run_check(project, print)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
