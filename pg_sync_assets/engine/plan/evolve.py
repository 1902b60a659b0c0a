"""Schema evolution: what an existing target may be changed into, per `on_schema_change`.

- `fail` (the default): any source column the target lacks, or has with another type,
  stops the run before anything is copied, with the list of differences.
- `add_columns`: source columns the target lacks are added to it.
- `evolve`: also widens a target column where every value it holds converts without loss
  (smallint -> integer -> bigint; varchar(n) -> varchar(m > n), varchar or text;
  numeric(p, s) -> numeric with no fewer digits on either side of the point, or
  unconstrained), and drops a NOT NULL the source no longer has (never on a key column).

Under `add_columns` and `evolve` anything else is refused with the full list of
differences and nothing written: a narrowing and a type change that can lose data.

In every mode, a target column the source does not have is refused (dropped or renamed
there: keeping it would leave stale values behind, and under a rename the new name's
values would go to a new column), unless `columns: {exclude: [...]}` names it: then it is
a target-only column the sync neither reads nor writes (new rows get its default).

The changes are planned before the copy (`plan_schema_changes`) and applied inside the
run's final transaction (`apply_schema_changes`), so a failed run leaves the target's
shape as it was too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg2 import sql

from ..errors import SchemaMismatchError
from .introspect import Column
from .spec import TableSpec

FAIL, ADD_COLUMNS, EVOLVE = "fail", "add_columns", "evolve"
ON_SCHEMA_CHANGE_CHOICES = (FAIL, ADD_COLUMNS, EVOLVE)

_INTEGERS = ("smallint", "integer", "bigint")
_VARCHAR = re.compile(r"character varying(?:\((\d+)\))?$")
_NUMERIC = re.compile(r"numeric(?:\((\d+),(\d+)\))?$")
_TYPMOD = re.compile(r"\(\d+(,\d+)?\)")


@dataclass(frozen=True)
class SchemaChange:
    """One change to the target table, in words (metadata, logs) and as a statement."""

    description: str
    statement: sql.Composed


def widens(old: str, new: str) -> bool:
    """Whether every value of type `old` (a target column's `type_key`) converts to `new`
    without loss: same text, same value."""
    if old in _INTEGERS and new in _INTEGERS:
        return _INTEGERS.index(new) > _INTEGERS.index(old)
    old_varchar = _VARCHAR.match(old)
    if old_varchar and old_varchar.group(1) is not None:
        if new == "text":
            return True
        new_varchar = _VARCHAR.match(new)
        return bool(new_varchar) and (
            new_varchar.group(1) is None or int(new_varchar.group(1)) > int(old_varchar.group(1))
        )
    old_numeric, new_numeric = _NUMERIC.match(old), _NUMERIC.match(new)
    if old_numeric and new_numeric and old_numeric.group(1) is not None:
        if new_numeric.group(1) is None:
            return True
        (p1, s1), (p2, s2) = (int(g) for g in old_numeric.groups()), (int(g) for g in new_numeric.groups())
        return s2 >= s1 and p2 - s2 >= p1 - s1 and (p2, s2) != (p1, s1)
    return False


def _same_type(source: Column, target: Column) -> bool:
    """Equal type keys; a column of a `query` has no typmod, so only its base type counts."""
    if source.type_key == target.type_key:
        return True
    return not source.typmod_known and _TYPMOD.sub("", source.type_key) == _TYPMOD.sub("", target.type_key)


def plan_schema_changes(
    spec: TableSpec, source: list[Column], target: list[Column], key: tuple[str, ...]
) -> list[SchemaChange]:
    """The changes `spec.on_schema_change` makes to an existing target (empty when it
    fits); SchemaMismatchError listing every difference when one is not allowed."""
    policy = spec.on_schema_change
    by_name = {c.name: c for c in target}
    changes: list[SchemaChange] = []
    refused: list[str] = []
    table = spec.target.ident
    for col in source:
        other = by_name.get(col.name)
        if other is None:
            text = f"column `{col.name}` ({col.type_key}) is missing in the target"
            if policy == FAIL:
                refused.append(text)
            else:
                changes.append(
                    SchemaChange(
                        f"added column `{col.name}` {col.type_key}",
                        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                            table, sql.Identifier(col.name), col.type_sql
                        ),
                    )
                )
            continue
        if not _same_type(col, other):
            text = f"column `{col.name}` is {col.type_key} in the source but {other.type_key} in the target"
            if policy == EVOLVE and widens(other.type_key, col.type_key):
                changes.append(
                    SchemaChange(
                        f"widened column `{col.name}` from {other.type_key} to {col.type_key}",
                        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                            table, sql.Identifier(col.name), col.type_sql
                        ),
                    )
                )
            elif policy == EVOLVE:
                refused.append(f"{text}, a change that can lose data")
            else:
                refused.append(text)
        if policy == EVOLVE and other.not_null and not col.not_null and col.name not in key:
            changes.append(
                SchemaChange(
                    f"dropped NOT NULL of column `{col.name}`",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(
                        table, sql.Identifier(col.name)
                    ),
                )
            )
    known = {c.name for c in source}
    for col in target:
        if col.name not in known and col.generated_expr is None and spec.selects(col.name):
            refused.append(
                f"column `{col.name}` is in the target but no longer in the source (dropped or "
                "renamed there); drop or rename it in the target, or name it in `columns: {exclude: "
                "[...]}` to keep it as a target-only column"
            )
    if refused:
        advice = {
            FAIL: "Alter the target table (or drop it to let pg_sync_assets recreate it), or set "
            "`on_schema_change: add_columns` (or `evolve`) to let runs add columns (and widen types)",
            ADD_COLUMNS: "`on_schema_change: add_columns` only adds columns (`evolve` also widens types "
            "without loss); alter the target table by hand for the rest",
            EVOLVE: "`on_schema_change: evolve` only adds columns, widens types without loss and drops "
            "NOT NULL; alter the target table by hand for the rest",
        }[policy]
        raise SchemaMismatchError(
            f"target table `{spec.target}` does not match the source: {'; '.join(refused)}. "
            f"{advice[0].upper()}{advice[1:]}; nothing was written"
        )
    return changes


def apply_schema_changes(cur, changes: list[SchemaChange]) -> None:
    """Run the planned changes, in the final transaction (the caller holds the table's
    ACCESS EXCLUSIVE lock, which ALTER TABLE takes anyway)."""
    for change in changes:
        cur.execute(change.statement)
