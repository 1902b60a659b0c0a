"""What the target table is, beyond its columns: kind, partitioning, inheritance,
the foreign keys that point at it, and whether it enforces the sync key itself.

Read at the start of every run, so a target that a sync cannot safely write is refused
with a clear message before anything is copied, never halfway through the merge:
- a view, materialized view or foreign table is not written;
- a table with inheritance children (not partitions) is refused: TRUNCATE and DELETE
  on it would reach the children, tables the sync was not asked to change;
- a table other tables reference by foreign key is refreshed by key (`merge.py`), and
  a deletion that would cascade into (or be blocked by) a referencing row is refused;
- an ON UPDATE CASCADE / SET NULL / SET DEFAULT key on columns outside the sync key
  is refused: an update of those columns would change the referencing table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SchemaMismatchError
from .spec import Mode, TableRef

_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "S": "a sequence"}
ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class Reference:
    """A foreign key of another table that points at the target."""

    constraint: str
    table: TableRef
    columns: tuple[str, ...]  # in the referencing table
    referenced: tuple[str, ...]  # in the target
    on_delete: str
    on_update: str


@dataclass(frozen=True)
class TargetShape:
    kind: str  # pg_class.relkind ('p': partitioned)
    partition: bool
    inheritance_children: tuple[TableRef, ...]
    referenced_by: tuple[Reference, ...]
    unique_keys: tuple[tuple[str, ...], ...]  # immediate, non-partial unique indexes

    @property
    def rebuild_indexes_allowed(self) -> bool:
        """Dropping and re-adding indexes is exact only for a plain, unpartitioned table."""
        return self.kind == "r" and not self.partition and not self.referenced_by

    def enforces(self, key: tuple[str, ...]) -> bool:
        """A unique index makes duplicate keys impossible in the target."""
        return any(set(cols) <= set(key) for cols in self.unique_keys)


_SHAPE_QUERY = """
SELECT c.oid, c.relkind::text, c.relispartition,
       ARRAY(SELECT ARRAY[cn.nspname::text, cc.relname::text] FROM pg_inherits i
             JOIN pg_class cc ON cc.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
             WHERE i.inhparent = c.oid AND NOT cc.relispartition ORDER BY 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""

_REFERENCES_QUERY = """
SELECT k.conname, rn.nspname, r.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o),
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o),
       k.confdeltype::text, k.confupdtype::text
FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.contype = 'f' AND k.confrelid = %s AND k.conrelid <> k.confrelid AND k.conparentid = 0
ORDER BY 2, 3, 1
"""

_UNIQUE_QUERY = """
SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey) n JOIN pg_attribute a
             ON a.attrelid = i.indrelid AND a.attnum = n)
FROM pg_index i
WHERE i.indrelid = %s AND i.indisunique AND i.indimmediate AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL
"""


def read_target_shape(cur, table: TableRef) -> TargetShape | None:
    """The target's shape, or None when it does not exist yet."""
    cur.execute(_SHAPE_QUERY, (table.schema, table.name))
    row = cur.fetchone()
    if row is None:
        return None
    oid, kind, partition, children = row
    cur.execute(_REFERENCES_QUERY, (oid,))
    references = tuple(
        Reference(name, TableRef(schema, rel), tuple(cols), tuple(ref), ACTIONS[d], ACTIONS[u])
        for name, schema, rel, cols, ref, d, u in cur.fetchall()
    )
    cur.execute(_UNIQUE_QUERY, (oid,))
    unique = tuple(tuple(r[0]) for r in cur.fetchall())
    return TargetShape(kind, partition, tuple(TableRef(*c) for c in children), references, unique)


def require_writable_target(table: TableRef, shape: TargetShape, mode: Mode, key: tuple[str, ...]) -> None:
    """Refuse, before anything is copied, a target the sync cannot write without side effects."""
    problem = None
    if shape.kind in _KINDS:
        problem = f"it is {_KINDS[shape.kind]}; `target` must name a table"
    elif shape.inheritance_children:
        names = ", ".join(f"`{c}`" for c in shape.inheritance_children)
        problem = (
            f"it has inheritance children ({names}), which deleting or truncating it would change; "
            "sync into a table without children (partitioned tables are fine)"
        )
    elif shape.referenced_by and mode is Mode.FULL_REFRESH and not key:
        problem = (
            f"{_referencing(shape)} reference it, so it is refreshed by key, and it has none; "
            "set `primary_key` to the columns those foreign keys reference"
        )
    else:
        cascading = [
            r
            for r in shape.referenced_by
            if r.on_update not in ("NO ACTION", "RESTRICT") and not set(r.referenced) <= set(key)
        ]
        if cascading:
            r = cascading[0]
            problem = (
                f"foreign key `{r.constraint}` of `{r.table}` references its column(s) {list(r.referenced)} "
                f"ON UPDATE {r.on_update}, and the sync may update them (they are not in the key "
                f"{list(key)}): that would change `{r.table}`; make the key cover them or change the "
                "foreign key's ON UPDATE action"
            )
    if problem:
        raise SchemaMismatchError(f"target table `{table}` cannot be synced: {problem}; nothing was written")


def _referencing(shape: TargetShape) -> str:
    return "foreign keys of " + ", ".join(sorted({f"`{r.table}`" for r in shape.referenced_by}))
