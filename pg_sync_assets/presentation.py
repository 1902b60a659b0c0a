"""The keys of a table entry that decide how it shows in Dagster, not what it copies:
`source_connection`, `target_connection`, `key_prefix`, `group`, `owners`, `tags`,
`description`, `retries`, `automation_condition`, `freshness`. Each is checked here the
way Dagster would check it, so a bad value fails the load naming the file, the entry and
the key instead of a Dagster error about an anonymous definition."""

from __future__ import annotations

from typing import Any

from dagster._core.definitions.utils import is_valid_owner
from dagster._utils.tags import is_valid_strict_tag_value, is_valid_tag_key

from .automation import parse_automation, parse_freshness
from .connections import SOURCE, TARGET
from .naming import VALID_NAME
from .project import Retries

PRESENTATION_KEYS = (
    "source_connection",
    "target_connection",
    "key_prefix",
    "group",
    "owners",
    "tags",
    "description",
    "retries",
    "automation_condition",
    "freshness",
)
RETRY_KEYS = ("max_retries", "delay", "backoff")
BACKOFFS = ("exponential", "linear")


def presentation_keys(entry) -> dict[str, Any]:
    """TableEntry keyword arguments from `entry` (an `entry_keys.EntryReader`: `.raw`, `.error`, `.text`)."""
    return {
        "source_connection": entry.text("source_connection") or SOURCE,
        "target_connection": entry.text("target_connection") or TARGET,
        "key_prefix": _key_prefix(entry),
        "group": _group(entry),
        "owners": _owners(entry),
        "tags": _tags(entry),
        "description": entry.text("description"),
        "retries": parse_retries(entry.raw.get("retries"), entry.error),
        "automation": parse_automation(entry.raw.get("automation_condition"), entry.error),
        "freshness": parse_freshness(entry.raw.get("freshness"), entry.error),
    }


def _names(entry, key: str) -> tuple[str, ...]:
    value = entry.raw.get(key)
    if value is None:
        return ()
    parts = [value] if isinstance(value, str) else value
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise entry.error(f"`{key}` must be a name or a list of names, got {value!r}")
    return tuple(parts)


def _key_prefix(entry) -> tuple[str, ...]:
    parts = _names(entry, "key_prefix")
    bad = [p for p in parts if not VALID_NAME.match(p)]
    if bad:
        raise entry.error(f"`key_prefix` parts may use only letters A-Z, a-z, digits and _, got {bad!r}")
    return parts


def _group(entry) -> str | None:
    group = entry.text("group")
    if group is not None and not all(VALID_NAME.match(part) for part in group.split("/")):
        raise entry.error(
            f"`group` must be letters A-Z, a-z, digits and _ (segments may be separated by /), got {group!r}"
        )
    return group


def _owners(entry) -> tuple[str, ...]:
    owners = _names(entry, "owners")
    bad = [o for o in owners if not is_valid_owner(o)]
    if bad:
        raise entry.error(f"`owners` must be email addresses or `team:NAME`, got {bad!r}")
    return owners


def _tags(entry) -> tuple[tuple[str, str], ...]:
    tags = entry.raw.get("tags")
    if tags is None:
        return ()
    if not isinstance(tags, dict):
        raise entry.error(f"`tags` must be a mapping of tag -> value, got {tags!r}")
    for key, value in tags.items():
        if not isinstance(key, str) or not is_valid_tag_key(key):
            raise entry.error(
                f"tag {key!r}: a tag key is letters, digits, `-`, `_` and `.`, at most 63 characters, "
                "with an optional `prefix/`"
            )
        if value == "" or value is None:
            value = ""
        if not isinstance(value, str) or (value and not is_valid_strict_tag_value(value)):
            raise entry.error(
                f"tag `{key}`: the value must be text of letters, digits, `-`, `_` and `.`, at most "
                f"63 characters (or empty), got {value!r}"
            )
    return tuple(sorted((k, v or "") for k, v in tags.items()))


def parse_retries(raw: Any, error) -> Retries | None:
    """`retries: N` (30 s, doubling) or `{max_retries: N, delay: SECONDS, backoff: exponential|linear}`."""
    if raw is None or raw == 0:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"max_retries": raw}
    if not isinstance(raw, dict):
        raise error(f"`retries` must be a number or a mapping with keys {list(RETRY_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(RETRY_KEYS))
    if unknown:
        raise error(f"`retries`: unknown key(s) {unknown}; allowed: {list(RETRY_KEYS)}")
    count, delay, backoff = raw.get("max_retries"), raw.get("delay", 30), raw.get("backoff", "exponential")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 10:
        raise error(f"`retries`: `max_retries` must be a whole number from 0 to 10, got {count!r}")
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 3600:
        raise error(f"`retries`: `delay` must be seconds from 0 to 3600, got {delay!r}")
    if backoff not in BACKOFFS:
        raise error(f"`retries`: `backoff` must be one of {list(BACKOFFS)}, got {backoff!r}")
    return Retries(count, float(delay), backoff) if count else None
