"""The time window of an incremental run, as a condition in the column's own type.

Boundaries are exact: [start, end) compared in the incremental column's type, never
through text or float epochs, so a row at 05:59:59.999999 belongs to 05:00 and one at
06:00:00 to 06:00.
- timestamptz: compared with tz-aware literals (the instant is exact in any zone);
- timestamp (no zone): the boundaries are the partition timezone's wall-clock times;
- date: a date belongs to the hour its midnight starts, so the window covers the dates
  whose midnight falls in [start, end) (an hour not starting a day has no dates).
The window is widened backwards by `lookback` hours so rows committed late, with an
older timestamp, are read again by the next runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg2 import sql

from ..errors import ConfigError
from .introspect import Column

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


@dataclass(frozen=True)
class Window:
    """[start, end) as tz-aware datetimes: the hours a run loads (before lookback)."""

    start: datetime
    end: datetime

    def hours(self) -> list[datetime]:
        out, hour = [], self.start
        while hour < self.end:
            out.append(hour)
            hour += timedelta(hours=1)
        return out


def _ceil_date(moment: datetime) -> date:
    day = moment.date()
    return day if moment.time() == datetime.min.time() else day + timedelta(days=1)


def window_condition(column: Column, window: Window, timezone: str, lookback_hours: int) -> sql.Composed:
    """`col >= start AND col < end` in the column's type; start moved back by lookback."""
    start = window.start - timedelta(hours=lookback_hours)
    ident = sql.Identifier(column.name)
    kind = column.type_key
    if kind.startswith("timestamp") and kind.endswith("with time zone"):
        low, high = start, window.end
    elif kind.startswith("timestamp"):
        zone = ZoneInfo(timezone)
        low = start.astimezone(zone).replace(tzinfo=None)
        high = window.end.astimezone(zone).replace(tzinfo=None)
    elif kind == "date":
        zone = ZoneInfo(timezone)
        low = _ceil_date(start.astimezone(zone).replace(tzinfo=None))
        high = _ceil_date(window.end.astimezone(zone).replace(tzinfo=None))
    else:
        raise ConfigError(
            f"`incremental_column` `{column.name}` is {kind}; it must be a timestamptz, "
            "timestamp or date column"
        )
    # COPY takes no bind parameters: the boundaries go in as quoted, typed literals.
    return sql.SQL("{} >= {} AND {} < {}").format(ident, sql.Literal(low), ident, sql.Literal(high))


def hour_bucket(column: Column, timezone: str) -> sql.Composed:
    """The partition hour (local wall-clock `timestamp`) a row belongs to."""
    ident = sql.Identifier(column.name)
    if column.type_key == "date":
        return sql.SQL("{}::timestamp").format(ident)
    if column.type_key.endswith("with time zone"):
        return sql.SQL("date_trunc('hour', {} AT TIME ZONE {})").format(ident, sql.Literal(timezone))
    return sql.SQL("date_trunc('hour', {})").format(ident)


def partition_key(local_hour: datetime) -> str:
    return local_hour.strftime(PARTITION_FORMAT)
