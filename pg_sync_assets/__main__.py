"""`python -m pg_sync_assets check [--config FILE]`: see `preflight.py`."""

from __future__ import annotations

import argparse
import sys

from .config import config_path, load_project
from .engine import ConfigError
from .preflight import run_check


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pg_sync_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check every table of the list against both catalogs")
    check.add_argument("--config", help="the table list (default: PG_SYNC_CONFIG)")
    args = parser.parse_args(argv)
    try:
        project = load_project(args.config or config_path())
    except ConfigError as exc:
        print(exc)
        return 2
    return run_check(project, print)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
