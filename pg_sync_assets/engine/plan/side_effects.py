"""The table list's SQL may read, never act: every function, operator and cast in a
`where` or `query` must be one the server's catalog declares non-volatile.

Parsing (`user_sql.py`) keeps user SQL to one expression or one SELECT, but an
expression can still call a function with side effects: `set_config(...)` changes the
session for the statements after it (with `standard_conforming_strings` turned off, the
same `where` spliced into the next statement is lexed differently and can end the
transaction), `nextval`, `pg_advisory_lock`, `dblink_exec`, `pg_sleep`, `lo_import`,
`lo_import` write, lock, wait or reach outside. PostgreSQL marks each of these VOLATILE,
and it does not let a STABLE or IMMUTABLE function's own statements write, so the rule
is the catalog's own: a name is accepted only if no function (or operator, or cast to
that type) it could resolve to is volatile. Two built-ins declared STABLE still act
(`txid_current` and `pg_current_xact_id` assign a transaction id) and are refused by
name. It is checked on each server the SQL runs on (a `where` narrows the target's scope
too), at plan time, before the SQL is sent.

What the rule trusts: functions already defined in the database, as declared by their
owners (a STABLE function that calls `set_config` itself is a bug of that database).
"""

from __future__ import annotations

from ..errors import ConfigError
from .spec import TableSpec
from .user_sql import Calls, calls

# Declared STABLE, yet they assign the transaction an id (a write): found by reading
# every STABLE function of pg_catalog (PostgreSQL 15).
_ACTING_BUILTINS = ["txid_current", "pg_current_xact_id"]
# Candidates are every function of that name on the search path (or in the schema
# written), so an overload the server would pick at run time is never missed.
_VOLATILE_FUNCTIONS = """
SELECT p.oid::regprocedure::text,
       p.provolatile = 'v' OR (n.nspname = 'pg_catalog' AND p.proname = ANY (%(acting)s))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = %(name)s
  AND CASE WHEN %(schema)s::text IS NULL THEN n.nspname = ANY (current_schemas(true))
           ELSE n.nspname = %(schema)s END
"""
_VOLATILE_OPERATORS = """
SELECT o.oid::regoperator::text
FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
JOIN pg_proc p ON p.oid = o.oprcode
WHERE o.oprname = %(name)s AND p.provolatile = 'v'
  AND CASE WHEN %(schema)s::text IS NULL THEN n.nspname = ANY (current_schemas(true))
           ELSE n.nspname = %(schema)s END
"""
_VOLATILE_CASTS = """
WITH t AS (
  SELECT to_regtype(array_to_string(
    ARRAY(SELECT quote_ident(x) FROM unnest(%(names)s::text[]) x), '.')) AS oid
)
SELECT p.oid::regprocedure::text
FROM t JOIN pg_type y ON y.oid = t.oid JOIN pg_proc p ON p.oid = y.typinput
WHERE p.provolatile = 'v'
UNION ALL
SELECT p.oid::regprocedure::text
FROM t JOIN pg_cast c ON c.casttarget = t.oid JOIN pg_proc p ON p.oid = c.castfunc
WHERE p.provolatile = 'v'
"""


def _name(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _refuse(spec: TableSpec, side: str, key: str, what: str, fix: str) -> ConfigError:
    return ConfigError(
        f"table entry `{spec.name}`: `{key}` calls {what} on the {side} server; the table list's SQL "
        f"may only read (a volatile function can change the session, write or wait), so {fix}"
    )


def require_side_effect_free(cur, spec: TableSpec, side: str) -> None:
    """ConfigError naming the entry, the key and the function when `spec`'s SQL that runs
    on `side` ("source": `where` and `query`; "target": `where`) could call anything
    volatile there, or a function the server does not have."""
    if spec.where is not None:
        _check(cur, spec, side, "where", calls(condition=spec.where))
    if spec.query is not None and side == "source":
        _check(cur, spec, side, "query", calls(query=spec.query))


def _check(cur, spec: TableSpec, side: str, key: str, found: Calls) -> None:
    for schema, name in found.functions:
        cur.execute(_VOLATILE_FUNCTIONS, {"name": name, "schema": schema, "acting": _ACTING_BUILTINS})
        candidates = cur.fetchall()
        if not candidates:
            raise _refuse(
                spec,
                side,
                key,
                f"function `{_name(schema, name)}`, which does not exist there",
                "check its name and schema (and that it exists on that server too)",
            )
        volatile = [signature for signature, is_volatile in candidates if is_volatile]
        if volatile:
            raise _refuse(
                spec,
                side,
                key,
                f"the function `{volatile[0]}`, which is volatile or writes",
                "remove it (for the current time use now() or CURRENT_TIMESTAMP, which are stable)",
            )
    for schema, name in found.operators:
        cur.execute(_VOLATILE_OPERATORS, {"name": name, "schema": schema})
        row = cur.fetchone()
        if row:
            what = f"the operator `{row[0]}`, whose function is volatile"
            raise _refuse(spec, side, key, what, "remove it")
    for names in found.types:
        cur.execute(_VOLATILE_CASTS, {"names": list(names)})
        row = cur.fetchone()
        if row:
            raise _refuse(
                spec,
                side,
                key,
                f"a cast to `{'.'.join(names)}` that runs the volatile function `{row[0]}`",
                "remove the cast",
            )
