"""Catalog reads: the columns, types and keys of a table or of a query's result.

Types are described so the rest of the engine can decide, per column, how it travels:
built-in types go through binary COPY as they are; user-defined types (enums, composites,
extension types) have server-specific OIDs that binary COPY would embed, so they travel
as text and are cast back on the target. Domains are resolved to their base type.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from ..errors import ConfigError
from .spec import TableRef

# OIDs below this are built into every PostgreSQL server and mean the same everywhere.
FIRST_NORMAL_OID = 16384

# Built-in types whose `=` holds only for identical text renderings ("image equality"),
# so a row can be compared in its own type. numeric (1.5 = 1.50), floats (0 = -0),
# interval ('1 day' = '24 hours'), jsonb (1.0 = 1) and types without `=` (json, point)
# are compared as text instead.
# fmt: off
IMAGE_EQUAL_TYPES = frozenset({
    16, 17, 18, 19, 20, 21, 23, 25, 26,  # bool bytea char name int8 int2 int4 text oid
    650, 774, 829, 869,  # cidr macaddr8 macaddr inet
    1042, 1043, 1082, 1083, 1114, 1184, 1266, 2950,  # bpchar varchar date time ts tstz timetz uuid
})

# How a built-in type enters the row hash (`verify.row_hash`), so that two values hash
# alike only when they render alike as text, and every bit of the value is hashed:
# - HASH_OWN: the type's own hash (`=` is identity, and the whole value is hashed);
# - HASH_BYTES: text hashed as its bytes (COLLATE "C": no collation folds two texts);
# - SEND_FUNCTIONS: the binary send form, hashed as bytes. For types whose `=` is not
#   identity (numeric's scale, interval's days and hours, bpchar's trailing blanks) or
#   whose own hash folds 64 bits to 32 (bigint, timestamps, times);
# - anything else (floats, json, jsonb, geometry, ranges, extension and user types) as
#   its text, as before.
HASH_OWN = frozenset({16, 17, 18, 21, 23, 26, 1082, 2950})  # bool bytea char int2 int4 oid date uuid
HASH_BYTES = frozenset({19, 25, 1043})  # name text varchar
SEND_FUNCTIONS = {
    20: "int8send", 1114: "timestamp_send", 1184: "timestamptz_send", 1083: "time_send",
    1266: "timetz_send", 1700: "numeric_send", 1186: "interval_send", 790: "cash_send",
    1042: "bpcharsend", 869: "inet_send", 650: "cidr_send", 829: "macaddr_send",
    774: "macaddr8_send", 1560: "bit_send", 1562: "varbit_send",
}
# fmt: on
OWN_HASH, BYTES_HASH, TEXT_HASH = "own", "bytes", "text"  # else a send function's name
# Types whose `=` follows a collation (a nondeterministic one says 'abc' = 'ABC').
COLLATABLE_TYPES = frozenset({19, 25, 1042, 1043})  # name text bpchar varchar


def hash_as(oid: int, element_oid: int | None) -> str:
    """How a column of built-in type `oid` (an array of `element_oid`) is hashed."""
    if element_oid is not None:  # an array: its send form holds dimensions, bounds, NULLs
        hashed = element_oid in HASH_OWN or element_oid in HASH_BYTES or element_oid in SEND_FUNCTIONS
        return "array_send" if hashed else TEXT_HASH
    if oid in HASH_OWN:
        return OWN_HASH
    if oid in HASH_BYTES:
        return BYTES_HASH
    return SEND_FUNCTIONS.get(oid, TEXT_HASH)


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    schema: str
    name: str
    kind: str  # pg_type.typtype: b base, e enum, d domain, c composite, r range, m multirange
    is_array: bool
    element_oid: int
    base_oid: int
    base_typmod: int
    enum_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    """One column as the engine moves it.

    `type_key` is the canonical type used to compare source and target, e.g.
    `numeric(12,2)`, `integer[]`, `public.mood`. `builtin_sql` is format_type's text for
    built-in types (valid type syntax by construction); user types are named by
    `user_type` (schema, name) and `is_array`.
    """

    name: str
    type_key: str
    not_null: bool = False
    generated_expr: str | None = None
    builtin_sql: str | None = None
    user_type: tuple[str, str] | None = None
    is_array: bool = False
    enum_labels: tuple[str, ...] = ()
    native_compare: bool = True
    typmod_known: bool = True
    hash_as: str = TEXT_HASH  # how `verify.row_hash` hashes it (see `hash_as`)
    collatable: bool = False  # compared under COLLATE "C", byte for byte

    @property
    def travels_as_text(self) -> bool:
        return self.user_type is not None

    @property
    def type_sql(self) -> sql.Composable:
        if self.user_type is None:
            assert self.builtin_sql is not None
            return sql.SQL(self.builtin_sql)
        ident = sql.Identifier(*self.user_type)
        return sql.SQL("{}[]").format(ident) if self.is_array else ident


_TYPES_QUERY = """
SELECT t.oid::int, n.nspname, t.typname, t.typtype::text,
       (t.typcategory = 'A' AND t.typelem <> 0) AS is_array, t.typelem::int,
       t.typbasetype::int, t.typtypmod,
       COALESCE((SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                 FROM pg_enum e WHERE e.enumtypid = t.oid), '{}')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = ANY(%s)
"""


def describe_types(cur, oids: set[int]) -> dict[int, TypeInfo]:
    """TypeInfo for `oids` and every element and base type they refer to."""
    known: dict[int, TypeInfo] = {}
    pending = set(oids)
    while pending:
        cur.execute(_TYPES_QUERY, (sorted(pending),))
        for row in cur.fetchall():
            known[row[0]] = TypeInfo(*row[:8], enum_labels=tuple(row[8]))
        pending = {
            o for info in known.values() for o in (info.element_oid, info.base_oid) if o and o not in known
        }
    return known


def _format_type(cur, oid: int, typmod: int) -> str:
    cur.execute("SELECT format_type(%s, %s)", (oid, typmod if typmod >= 0 else None))
    return cur.fetchone()[0]


def build_column(
    cur,
    types: dict[int, TypeInfo],
    name: str,
    oid: int,
    typmod: int,
    not_null: bool,
    generated_expr: str | None,
    typmod_known: bool = True,
) -> Column:
    """Resolve domains to their base type and classify the column's type."""
    info = types[oid]
    while info.kind == "d":
        oid, typmod = info.base_oid, info.base_typmod
        info = types[oid]
    element = types[info.element_oid] if info.is_array else info
    if oid < FIRST_NORMAL_OID and element.oid < FIRST_NORMAL_OID:
        text = _format_type(cur, oid, typmod)
        return Column(
            name,
            text,
            not_null,
            generated_expr,
            builtin_sql=text,
            native_compare=element.oid in IMAGE_EQUAL_TYPES,
            typmod_known=typmod_known,
            hash_as=hash_as(oid, element.oid if info.is_array else None),
            collatable=element.oid in COLLATABLE_TYPES,
        )
    suffix = "[]" if info.is_array else ""
    return Column(
        name,
        f"{element.schema}.{element.name}{suffix}",
        not_null,
        generated_expr,
        user_type=(element.schema, element.name),
        is_array=info.is_array,
        enum_labels=element.enum_labels,
        native_compare=element.kind == "e",
        typmod_known=typmod_known,
    )


_TABLE_COLUMNS_QUERY = """
SELECT a.attname, a.atttypid::int, a.atttypmod, a.attnotnull,
       CASE WHEN a.attgenerated = 's' THEN pg_get_expr(d.adbin, d.adrelid) END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def table_exists(cur, table: TableRef) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        (table.schema, table.name),
    )
    return cur.fetchone() is not None


_MATCHING_QUERY = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname LIKE %(schema)s AND c.relname LIKE %(table)s AND c.relkind = ANY(%(kinds)s)
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sync_staging') AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY 1, 2
"""


def tables_like(cur, schema_like: str, table_like: str, views: bool) -> list[TableRef]:
    """Tables (and partitioned tables; views and materialized views with `views`) whose
    schema and name match the LIKE patterns; partitions are left to their parent, and
    the system and staging schemas are never listed."""
    kinds = ["r", "p", "v", "m"] if views else ["r", "p"]
    cur.execute(_MATCHING_QUERY, {"schema": schema_like, "table": table_like, "kinds": kinds})
    return [TableRef(schema, name) for schema, name in cur.fetchall()]


def table_columns(cur, table: TableRef) -> list[Column]:
    """The columns of `table` in order; empty when the table does not exist."""
    cur.execute(_TABLE_COLUMNS_QUERY, (table.schema, table.name))
    rows = cur.fetchall()
    types = describe_types(cur, {r[1] for r in rows})
    return [build_column(cur, types, *row) for row in rows]


def query_columns(cur, query: str, label: str) -> list[Column]:
    """The result columns of a source query, read without running it (LIMIT 0).

    A column taken straight from a table keeps that column's exact type; a computed
    column gets its type without modifier (numeric rather than numeric(12,2)).
    """
    cur.execute(
        sql.SQL("SELECT * FROM ({}) AS {} LIMIT 0").format(sql.SQL(query), sql.Identifier("pg_sync_query"))
    )
    described = list(cur.description)
    names = [d.name for d in described]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"the query of `{label}` returns the column name(s) {duplicates} more than once; "
            "give every column a distinct alias"
        )
    resolved: list[tuple[str, int, int, bool]] = []
    for d in described:
        typmod, known = -1, False
        if d.table_oid and d.table_column:
            cur.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s AND attnum = %s",
                (d.table_oid, d.table_column),
            )
            row = cur.fetchone()
            typmod, known = (row[0], True) if row else (-1, False)
        resolved.append((d.name, d.type_code, typmod, known))
    types = describe_types(cur, {r[1] for r in resolved})
    return [
        build_column(cur, types, name, oid, typmod, False, None, typmod_known=known)
        for name, oid, typmod, known in resolved
    ]


_PRIMARY_KEY_QUERY = """
SELECT a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE i.indisprimary AND n.nspname = %s AND c.relname = %s
ORDER BY k.ord
"""


def primary_key(cur, table: TableRef) -> tuple[str, ...]:
    cur.execute(_PRIMARY_KEY_QUERY, (table.schema, table.name))
    return tuple(r[0] for r in cur.fetchall())
