"""`automation_condition` and `freshness` of a table entry: Dagster's declarative
automation and freshness policies, as alternatives to (or beside) the job schedules.

- `automation_condition: {on_cron: "0 * * * *"}`: materialize once after each cron tick
  (hourly tables: the partition of the hour that tick completes), run by Dagster's
  automation sensor (`dagster-daemon` or `dg dev`, with the default sensor running).
- `automation_condition: eager`: materialize whenever an upstream asset is updated. A
  table's upstream is its source table's external asset, which is updated only when
  something reports it (an observation); with nothing reporting, `eager` never fires.
- `freshness: {fail_window: 2h, warn_window: 1h}`: the asset is stale (a failure) when
  its last materialization is older than `fail_window` (a warning past `warn_window`).

Pure parsing: the Dagster objects are made in `assets.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .entry_keys import valid_cron

AUTOMATION_KEYS = ("on_cron", "eager")
FRESHNESS_KEYS = ("fail_window", "warn_window")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Automation:
    on_cron: str | None = None  # else eager


@dataclass(frozen=True)
class Freshness:
    fail_window: timedelta
    warn_window: timedelta | None = None


def parse_automation(raw: Any, error) -> Automation | None:
    if raw is None:
        return None
    if raw == "eager" or raw == {"eager": True}:
        return Automation()
    if isinstance(raw, dict) and set(raw) == {"on_cron"}:
        cron = raw["on_cron"]
        if not isinstance(cron, str) or not valid_cron(cron):
            raise error(f"`automation_condition.on_cron` must be a 5-field cron string, got {cron!r}")
        return Automation(on_cron=cron)
    raise error(f"`automation_condition` must be `eager` or `{{on_cron: CRON}}`, got {raw!r}")


def duration(raw: Any, key: str, error) -> timedelta:
    found = _DURATION.match(raw) if isinstance(raw, str) else None
    if found is None or int(found.group(1)) == 0:
        raise error(f"`{key}` must be a duration like `90m`, `2h` or `1d`, got {raw!r}")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def parse_freshness(raw: Any, error) -> Freshness | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or "fail_window" not in raw or set(raw) - set(FRESHNESS_KEYS):
        raise error(f"`freshness` must be a mapping with `fail_window` (and `warn_window`), got {raw!r}")
    fail = duration(raw["fail_window"], "freshness.fail_window", error)
    warn = duration(raw["warn_window"], "freshness.warn_window", error) if "warn_window" in raw else None
    if warn is not None and warn >= fail:
        raise error("`freshness.warn_window` must be shorter than `fail_window`")
    return Freshness(fail, warn)
