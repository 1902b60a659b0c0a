"""Staging -> final table, inside the caller's one transaction.

`merge`: MERGE by key with an IS DISTINCT FROM guard, so unchanged rows are not
rewritten (half the time and a fifth of the WAL of an unguarded upsert); the guard
compares in the column's own type where equality means identical text (texts under
COLLATE "C": a nondeterministic collation says 'abc' = 'ABC'), and as text where it
does not (numeric 1.5 = 1.50, float 0 = -0, interval '1 day' = '24 hours', json without
`=`), so a change the checksum would see is never skipped.
`full_refresh`: TRUNCATE + INSERT in the same transaction: readers see the old rows
or the new ones, never a half; grants, views and the table's OID survive. A table
that other tables reference by foreign key is refreshed by key instead: MERGE, then
delete the rows gone from the source, so a row still present is never deleted (a
DELETE + INSERT would cascade into, or be blocked by, the referencing tables).
Every deletion first checks that no referencing row points at a row it removes.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from ..errors import SyncError
from ..plan.introspect import Column
from ..plan.spec import TableRef, TableSpec
from ..plan.target import TargetShape
from ..sql import key_in, planner_settings, scope_condition
from .indexes import drop_indexes_for_reload, rebuild_indexes
from .staging import STAGING_SCHEMA

# How a run changed the final table; a truncate_insert counts rows written, not changes.
MERGED, KEYED_REFRESH, TRUNCATE_INSERT = "merge", "keyed_refresh", "truncate_insert"
DIFFERENTIAL = "differential"  # only the rows a comparison found different were written


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    deleted: int
    method: str = MERGED

    def fields(self) -> dict[str, int]:
        """As a SyncResult's `inserted`, `updated` and `deleted`."""
        return dict(inserted=self.inserted, updated=self.updated, deleted=self.deleted)


def staged_value(col: Column, alias: str = "s") -> sql.Composable:
    """A staging column as a value of the target column's type."""
    ref = sql.Identifier(alias, col.name)
    return sql.SQL("{}::{}").format(ref, col.type_sql) if col.travels_as_text else ref


def _comparable(expr: sql.Composable, col: Column) -> sql.Composable:
    if not col.native_compare:
        return sql.SQL("({})::text").format(expr)
    if col.collatable:  # byte for byte, whatever the column's collation says is equal
        return sql.SQL("{} COLLATE {}").format(expr, sql.Identifier("pg_catalog", "C"))
    return expr


def key_match(key: list[Column]) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("t", c.name), staged_value(c)) for c in key
    )


def _staging(name: str) -> sql.Composable:
    return sql.SQL("{} AS s").format(sql.Identifier(STAGING_SCHEMA, name))


def merge_statement(target: TableRef, staging: str, columns: list[Column], key: list[Column]) -> sql.Composed:
    key_names = {c.name for c in key}
    others = [c for c in columns if c.name not in key_names]
    clauses: list[sql.Composable] = []
    if others:
        changed = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
            sql.SQL(", ").join(_comparable(sql.Identifier("t", c.name), c) for c in others),
            sql.SQL(", ").join(_comparable(staged_value(c), c) for c in others),
        )
        clauses.append(
            sql.SQL("WHEN MATCHED AND {} THEN UPDATE SET {}").format(
                changed,
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c.name), staged_value(c)) for c in others
                ),
            )
        )
    clauses.append(
        sql.SQL("WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
            sql.SQL(", ").join(staged_value(c) for c in columns),
        )
    )
    return sql.SQL("MERGE INTO {} AS t USING {} ON {} {}").format(
        target.ident, _staging(staging), key_match(key), sql.SQL(" ").join(clauses)
    )


# The MERGE looks each staged key up in the target's unique index instead of hashing the
# staged rows and scanning the whole target, which is what the planner's default costs
# (random_page_cost 4) pick. Measured (docs/benchmarks.md, benchmarks/merge_join.py) 1.2 to 1.9 times
# faster, from 1% of the rows staged to all of them. Only where a unique index on the key
# exists: otherwise a lookup would be a scan, and the settings are left alone.
KEY_LOOKUP_JOIN = {"enable_hashjoin": "off", "enable_mergejoin": "off"}


def count_matched(cur, target: TableRef, staging: str, key: list[Column]) -> int:
    """Staged rows whose key already exists in the target (to split inserts from updates)."""
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
            _staging(staging), target.ident, key_match(key)
        )
    )
    return cur.fetchone()[0]


def require_unique_staged_keys(cur, target: TableRef, staging: str, key: list[Column]) -> None:
    """Refuse a source scope with several rows for one key, whatever the target's indexes
    (without a unique index there, MERGE would insert them all)."""
    keys = sql.SQL(", ").join(sql.Identifier(c.name) for c in key)
    cur.execute(
        sql.SQL("SELECT ROW({})::text FROM {} GROUP BY {} HAVING count(*) > 1 LIMIT 3").format(
            keys, sql.Identifier(STAGING_SCHEMA, staging), keys
        )
    )
    examples = [r[0] for r in cur.fetchall()]
    if examples:
        raise duplicate_keys(str(target), "merge", [c.name for c in key], examples)


def duplicate_keys(table: str, stage: str, key: list[str], examples: list[str]) -> SyncError:
    return SyncError(
        table,
        stage,
        f"the source scope has several rows for one key ({', '.join(key)}), e.g. {', '.join(examples)}; "
        "make the key unique in the source (or in `query`/`where`) or set `primary_key` to columns "
        "that identify a row; the target table is unchanged",
    )


def merge_from_staging(
    cur,
    target: TableRef,
    staging: str,
    columns: list[Column],
    key: list[Column],
    staged_rows: int,
    shape: TargetShape | None = None,
    matched: int | None = None,
) -> MergeCounts:
    """MERGE the staged rows by key (only rows that differ are written); `matched`, the
    staged keys the target already has, when the caller knows it (else counted)."""
    indexed = shape is not None and shape.enforces(tuple(c.name for c in key))
    if not indexed:
        require_unique_staged_keys(cur, target, staging, key)
    with planner_settings(cur, KEY_LOOKUP_JOIN if indexed else {}):
        if matched is None:
            matched = count_matched(cur, target, staging, key)
        cur.execute(merge_statement(target, staging, columns, key))
        written = cur.rowcount  # before restoring the settings, which is a statement too
    inserted = staged_rows - matched
    return MergeCounts(inserted=inserted, updated=written - inserted, deleted=0)


def delete_rows(cur, target: TableRef, condition: sql.Composable, shape: TargetShape | None) -> int:
    """DELETE the target rows (alias `t`) matching `condition`, unless a row of another
    table references one of them: then nothing is deleted and the error names that table.

    The rows are locked first (FOR UPDATE conflicts with the FOR KEY SHARE lock that a new
    referencing row takes), so no referencing row can appear between check and delete.
    """
    references = shape.referenced_by if shape is not None else ()
    if references:
        cur.execute(sql.SQL("SELECT 1 FROM {} AS t WHERE {} FOR UPDATE").format(target.ident, condition))
    for ref in references:
        pairs = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("t", t), sql.Identifier("c", c))
            for t, c in zip(ref.referenced, ref.columns, strict=True)
        )
        cur.execute(
            sql.SQL(
                "SELECT count(*), (array_agg(ROW({})::text))[1:3] FROM {} AS c "
                "WHERE EXISTS (SELECT 1 FROM {} AS t WHERE ({}) AND {})"
            ).format(
                sql.SQL(", ").join(sql.Identifier("c", c) for c in ref.columns),
                ref.table.ident,
                target.ident,
                condition,
                pairs,
            )
        )
        count, examples = cur.fetchone()
        if count:
            effect = (
                "delete or change them" if ref.on_delete in ("CASCADE", "SET NULL", "SET DEFAULT") else "fail"
            )
            raise SyncError(
                str(target),
                "merge",
                f"{count} row(s) of `{ref.table}` (e.g. {', '.join(examples)}) reference rows that left "
                f"the source, through foreign key `{ref.constraint}` (ON DELETE {ref.on_delete}); deleting "
                f"those rows would {effect}, and `{ref.table}` is not part of this sync; sync `{ref.table}` "
                "first (or remove those rows), then run again; the target table is unchanged",
            )
    cur.execute(sql.SQL("DELETE FROM {} AS t WHERE {}").format(target.ident, condition))
    return cur.rowcount


def not_staged(staging: str, key: list[Column]) -> sql.Composable:
    """Target rows (alias `t`) whose key is not among the staged rows."""
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} WHERE {})").format(_staging(staging), key_match(key))


def delete_missing(cur, spec: TableSpec, staging: str, key: list[Column], shape: TargetShape | None) -> int:
    """Delete target rows in scope whose key is not among the staged rows."""
    return delete_rows(cur, spec.target, scope_condition(spec, not_staged(staging, key)), shape)


def replace_from_staging(
    cur,
    target: TableRef,
    staging: str,
    columns: list[Column],
    key: list[Column],
    rows: int,
    shape: TargetShape | None,
) -> MergeCounts:
    """The target ends equal to the staged rows: by key where other tables reference it,
    else TRUNCATE + INSERT (indexes rebuilt once after the load where that is exact)."""
    if shape is not None and shape.referenced_by:
        counts = merge_from_staging(cur, target, staging, columns, key, rows, shape)
        deleted = delete_rows(cur, target, not_staged(staging, key), shape)
        return MergeCounts(counts.inserted, counts.updated, deleted, KEYED_REFRESH)
    rebuild: list = []
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(target.ident))
    deleted = cur.fetchone()[0]
    cur.execute(sql.SQL("TRUNCATE {}").format(target.ident))
    if shape is not None and shape.rebuild_indexes_allowed:
        rebuild = drop_indexes_for_reload(cur, target)
    cur.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            target.ident,
            sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
            sql.SQL(", ").join(staged_value(c) for c in columns),
            _staging(staging),
        )
    )
    inserted = cur.rowcount
    rebuild_indexes(cur, target, rebuild)
    return MergeCounts(inserted=inserted, updated=0, deleted=deleted, method=TRUNCATE_INSERT)


def delete_keys(
    cur, target: TableRef, key: list[Column], keys_by_column: list[list[str]], shape: TargetShape | None
) -> int:
    """Delete the target rows whose key is in `keys_by_column` (one text list per key column)."""
    if not keys_by_column or not keys_by_column[0]:
        return 0
    # delete_rows runs the condition in several statements: the keys go in as literals.
    arrays = [sql.Literal(values) for values in keys_by_column]
    return delete_rows(cur, target, key_in(key, arrays), shape)
