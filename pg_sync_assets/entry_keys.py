"""One table entry's keys, each read and checked: the reader (`EntryReader`, whose
errors name the file, the entry and the key) and the readers of the keys that need
more than a type check (incremental settings, column selection, snapshot groups, lock
times, choices). `config.py` assembles them into a TableSpec.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dagster._utils.schedules import is_valid_cron_string

from .engine.errors import ConfigError
from .engine.plan.spec import Mode, TableRef, TableSpec
from .engine.plan.user_sql import columns_named
from .engine.plan.window import PARTITION_FORMAT
from .naming import VALID_NAME

INCREMENTAL_KEYS = ("incremental_column", "partition_start", "timezone", "lookback", "lookback_rows")


class EntryReader:
    """Reads one table entry and builds errors that say where the problem is."""

    def __init__(self, raw: dict, number: int, where: str) -> None:
        self.raw = raw
        label = raw.get("name") or raw.get("target") or raw.get("source") or "?"
        self.where = f"{where}, table entry {number} (`{label}`)"

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}")

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(f"`{key}` is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"`{key}` must be a non-empty string, got {value!r}")
        return value

    def sql(self, key: str, clean) -> str | None:
        """Operator SQL, checked by PostgreSQL's parser before anything is sent (`user_sql`)."""
        value = self.text(key)
        if value is None:
            return None
        try:
            return clean(value)
        except ConfigError as exc:
            raise self.error(f"{exc}; got {value!r}") from None

    def table(self, key: str) -> TableRef | None:
        value = self.text(key)
        if value is None:
            return None
        ref = TableRef.parse(value)
        if not ref.schema or not ref.name:
            raise self.error(f"`{key}` must be `schema.table` (names as written, no quotes), got {value!r}")
        return ref

    def columns(self, key: str, value: Any = None) -> tuple[str, ...]:
        value = self.raw.get(key) if value is None else value
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(f"`{key}` must be a list of column names, got {value!r}")
        if len(set(value)) != len(value):
            raise self.error(f"`{key}` lists a column twice: {value!r}")
        return tuple(value)


def column_selection(entry: EntryReader, key: tuple[str, ...], cursor: str | None, where: str | None) -> dict:
    """`columns: {include: [...]}` or `{exclude: [...]}`. What can be refused without the
    catalog is refused here: a key or cursor column written in this entry and left out,
    and a `where` on a column left out (the checks apply `where` to the target too)."""
    raw = entry.raw.get("columns")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("include", "exclude"):
        raise entry.error(
            "`columns` must be `{include: [column, ...]}` (copy only these) or "
            f"`{{exclude: [column, ...]}}` (copy all but these), one of the two; got {raw!r}"
        )
    kind, value = next(iter(raw.items()))
    names = entry.columns(f"columns.{kind}", value)
    selects = (lambda c: c in names) if kind == "include" else (lambda c: c not in names)
    left_out = [k for k in key if not selects(k)]
    if left_out:
        raise entry.error(
            f"`columns.{kind}` leaves out key column(s) {left_out}: a row cannot be matched "
            "without its key; keep them in the copy"
        )
    if cursor is not None and not selects(cursor):
        raise entry.error(
            f"`columns.{kind}` leaves out the `incremental_column` {cursor!r}, which every "
            "window is verified on; keep it in the copy"
        )
    in_where = sorted(c for c in columns_named(where) if not selects(c)) if where else []
    if in_where:
        raise entry.error(
            f"`where` uses column(s) {in_where} that `columns.{kind}` leaves out; the checks "
            "apply `where` to the target table too, where those columns do not exist"
        )
    return {f"columns_{kind}": names}


def snapshot_group_key(entry: EntryReader, mode: Mode, schedule: str | None) -> dict:
    group = entry.text("snapshot_group")
    if group is None:
        return {}
    if not VALID_NAME.match(group):
        raise entry.error(
            f"`snapshot_group` names a step: use only letters A-Z, a-z, digits and _, got {group!r}"
        )
    if mode is Mode.INCREMENTAL:
        raise entry.error(
            "`snapshot_group` applies to `full_refresh`, `merge` and `cdc` tables (an incremental "
            "table copies its own window)"
        )
    if schedule is not None:
        raise entry.error(
            "a table of a `snapshot_group` runs with its group (in `sync_all` and `sync_daily`); "
            "remove its `schedule`"
        )
    return {"snapshot_group": group}


def choice(entry: EntryReader, key: str, choices: tuple[str, ...]) -> dict:
    if key not in entry.raw:
        return {}
    value = entry.raw[key]
    if value not in choices:
        raise entry.error(f"`{key}` must be one of {list(choices)}, got {value!r}")
    return {key: value}


MAX_PARALLEL = 16


def parallel_key(entry: EntryReader) -> dict:
    """`parallel`: sessions a side for a full copy, 1 to 16, or `auto` (stored as 0)."""
    if "parallel" not in entry.raw:
        return {}
    value = entry.raw["parallel"]
    if value == "auto":
        return {"parallel": 0}
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLEL:
        raise entry.error(
            f"`parallel` must be a whole number of sessions from 1 to {MAX_PARALLEL}, or `auto` (one session "
            f"a side for each million rows, at most 4), got {value!r}"
        )
    return {"parallel": value}


def incremental_keys(entry: EntryReader, mode: Mode, schedule: str | None) -> dict:
    """incremental_column, partition_start, timezone, lookback: checked for `incremental`."""
    keys = [k for k in INCREMENTAL_KEYS if k in entry.raw]
    if mode is not Mode.INCREMENTAL:
        if keys:
            raise entry.error(
                f"{keys} apply to mode `incremental` only, and this entry's mode is `{mode.value}`; "
                "remove them, or set `mode: incremental`"
            )
        return {}
    raw_start = entry.raw.get("partition_start")
    if isinstance(raw_start, (date, datetime)):  # YAML reads an unquoted 2026-11-20 as a date
        raise entry.error(
            f"`partition_start` must be an hourly partition key in quotes, like '2026-11-20-00:00' "
            f"({PARTITION_FORMAT}); YAML read the unquoted value as the date {raw_start.isoformat()}"
        )
    column, start = entry.text("incremental_column", required=True), entry.text("partition_start")
    if start is None:
        return _integer_cursor_keys(entry, column)
    if "lookback_rows" in entry.raw:
        raise entry.error(
            "`lookback_rows` applies to an integer cursor (no `partition_start`); hourly partitions "
            "use `lookback` (hours)"
        )
    try:
        first_hour = datetime.strptime(start, PARTITION_FORMAT)
    except ValueError:
        first_hour = None
    if first_hour is None or first_hour.minute != 0:
        raise entry.error(
            f"`partition_start` must be an hourly partition key, on the hour, like "
            f"'2026-11-20-00:00' ({PARTITION_FORMAT}), got {start!r}"
        )
    zone = entry.text("timezone") or "UTC"
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise entry.error(
            f"`timezone` {zone!r} is not a known IANA time zone (e.g. 'UTC', 'Asia/Seoul')"
        ) from None
    if first_hour.replace(tzinfo=tz) > datetime.now(tz):
        raise entry.error(
            f"`partition_start` {start!r} is in the future ({zone}): no hour before it can be loaded "
            "and no partition exists until then; set it to the first hour of the data"
        )
    lookback = entry.raw.get("lookback", 0)
    if not isinstance(lookback, int) or isinstance(lookback, bool) or not 0 <= lookback <= 168:
        raise entry.error(f"`lookback` must be a whole number of hours from 0 to 168, got {lookback!r}")
    if schedule is not None:
        raise entry.error(
            "`schedule` does not apply to mode `incremental`: it loads the last complete "
            "hour every hour; set the minute with `schedules: {minute_of_hour: N}`"
        )
    return {"incremental_column": column, "partition_start": start, "timezone": zone, "lookback": lookback}


def _integer_cursor_keys(entry: EntryReader, column: str) -> dict:
    """`incremental` without `partition_start`: an integer cursor with `lookback_rows`."""
    hourly = [k for k in ("timezone", "lookback") if k in entry.raw]
    if hourly:
        raise entry.error(
            f"{hourly} apply to hourly partitions: set `partition_start` (without it, "
            f"`{column}` is an integer cursor, and `lookback_rows` re-reads the newest rows)"
        )
    rows = entry.raw.get("lookback_rows", 0)
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise entry.error(f"`lookback_rows` must be a whole number of rows, 0 or more, got {rows!r}")
    return {"incremental_column": column, "lookback_rows": rows}


def lock_keys(entry: EntryReader) -> dict:
    """lock_timeout and lock_attempt_timeout: seconds, positive, the try within the whole."""
    values = {}
    for key in ("lock_timeout", "lock_attempt_timeout"):
        if key not in entry.raw:
            continue
        value = entry.raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
            raise entry.error(f"`{key}` must be a number of seconds above 0 (at most 86400), got {value!r}")
        values[key] = float(value)
    total = values.get("lock_timeout", TableSpec.lock_timeout)
    if values.get("lock_attempt_timeout", 0) > total:
        raise entry.error(
            f"`lock_attempt_timeout` ({values['lock_attempt_timeout']:g} s) is longer than `lock_timeout` "
            f"({total:g} s): one try cannot outlast the whole wait; lower it or raise `lock_timeout`"
        )
    return values


def valid_cron(text: str) -> bool:
    """Exactly the check Dagster applies to a schedule's cron string, five fields."""
    return len(text.split()) == 5 and is_valid_cron_string(text)


DEFAULT_CDC_MAX_LAG_MB = 1024


def cdc_entry_rules(entry: EntryReader, query: str | None, where: str | None, schedule: str | None) -> None:
    """What `mode: cdc` cannot combine with."""
    if query is not None:
        raise entry.error(
            "mode `cdc` applies the changes of a table (`source: schema.table`), not of a `query`"
        )
    if where is not None:
        raise entry.error(
            "mode `cdc` copies and follows the whole table; a `where` would have to follow rows "
            "moving in and out of it: remove `where`, or use `merge` with `where`"
        )
    if schedule is not None:
        raise entry.error(
            "a `cdc` table runs on its source connection's schedule `cdc_<connection>` "
            "(`schedules: {cdc_cron: ...}`, every 5 minutes by default); remove its `schedule`"
        )


def cdc_max_lag(entry: EntryReader) -> dict:
    """`cdc_max_lag_mb`: the `cdc_lag` check fails when the source has written more WAL than
    this since the position the target holds (cdc tables only; `defaults:` may set it)."""
    if "cdc_max_lag_mb" not in entry.raw:
        return {}
    value = entry.raw["cdc_max_lag_mb"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise entry.error(f"`cdc_max_lag_mb` must be a whole number of megabytes above 0, got {value!r}")
    return {"cdc_max_lag_mb": value}
