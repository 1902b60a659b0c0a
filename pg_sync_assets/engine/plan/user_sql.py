"""The SQL an operator writes in the table list, `where` and `query`, checked with
PostgreSQL's own parser (pglast embeds it) before any of it is sent to a server.

Both are spliced into statements that psycopg2 sends through the simple query
protocol, which runs every statement of a string: a `where` such as
`true); COMMIT; BEGIN READ WRITE; INSERT ...` would end the read-only transaction and
write to the source. So a `where` must be exactly one expression and a `query` exactly
one read-only SELECT; trailing `;` and comments are removed (they would otherwise cut
the statement they are wrapped in). A hand-written check would have to know dollar
quotes, E'' strings, nested comments and every keyword; the parser already does.
Sessions pin `standard_conforming_strings = on` (see `connect.py`), the rule for
backslashes this parser applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

from ..errors import ConfigError

_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}
_SEMICOLON = "ASCII_59"
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


def _nodes(node: object) -> Iterator[ast.Node]:
    """Every node below `node`, itself included; lists nest (a FROM function is a list
    of (call, column definitions) pairs), so tuples are walked at any depth."""
    if isinstance(node, tuple):
        for child in node:
            yield from _nodes(child)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    for slot in node.__slots__:
        value = getattr(node, slot, None)
        if isinstance(value, (ast.Node, tuple)):
            yield from _nodes(value)


def _significant(key: str, text: str) -> str:
    """`text` without leading/trailing comments and trailing `;`; one `;` inside is an error."""
    try:
        tokens = [t for t in scan(text) if t.name not in _COMMENTS]
    except ParseError as exc:
        raise ConfigError(f"`{key}` is not valid SQL: {exc.args[0]}") from None
    while tokens and tokens[-1].name == _SEMICOLON:
        tokens.pop()
    if not tokens:
        raise ConfigError(f"`{key}` is empty once comments and `;` are removed")
    inner = [t for t in tokens if t.name == _SEMICOLON]
    if inner:
        raise ConfigError(
            f"`{key}` holds a `;` at character {inner[0].start + 1}: it must be "
            + ("one SQL condition" if key == "where" else "one SELECT statement")
            + ", not several statements; remove the `;` and what follows it"
        )
    return text[tokens[0].start : tokens[-1].end + 1]


def _parse(key: str, statement: str, offset: int) -> ast.RawStmt:
    try:
        statements = parse_sql(statement)
    except ParseError as exc:
        message, position = exc.args[0], exc.args[1] - offset if len(exc.args) > 1 else None
        where = f" (character {position + 1})" if position is not None and position >= 0 else ""
        raise ConfigError(f"`{key}` is not valid SQL: {message}{where}") from None
    if len(statements) != 1:
        raise ConfigError(f"`{key}` must be a single statement, found {len(statements)}")
    return statements[0]


def _require_read_only(key: str, node: ast.Node) -> None:
    for part in _nodes(node):
        if isinstance(part, _WRITES):
            kind = type(part).__name__.removesuffix("Stmt").upper()
            raise ConfigError(f"`{key}` contains {kind}: the source is only ever read; use a plain SELECT")
        if isinstance(part, ast.LockingClause):
            raise ConfigError(f"`{key}` locks rows (FOR UPDATE/SHARE): the source is only read; remove it")
        if isinstance(part, ast.IntoClause):
            raise ConfigError(f"`{key}` uses SELECT ... INTO, which creates a table; remove INTO")


# Only the parser sees these wrappers; what reaches a server is composed in `sql.py`.
_WHERE_PREFIX = "SELECT 1 WHERE ("


def clean_where(text: str) -> str:
    """`text` as exactly one SQL condition, comments and trailing `;` removed."""
    condition = _significant("where", text)
    depth = 0
    for token in scan(condition):
        depth += {"ASCII_40": 1, "ASCII_41": -1}.get(token.name, 0)
        if depth < 0:
            raise ConfigError(
                f"`where` closes a parenthesis it never opened (character {token.start + 1}); "
                "it must be one SQL condition with balanced parentheses"
            )
    if depth:
        raise ConfigError("`where` leaves a parenthesis open; it must be one SQL condition")
    statement = _parse("where", _WHERE_PREFIX + condition + "\n)", len(_WHERE_PREFIX)).stmt
    _require_read_only("where", statement)
    return condition


def clean_query(text: str) -> str:
    """`text` as exactly one read-only SELECT, comments and trailing `;` removed."""
    query = _significant("query", text)
    statement = _parse("query", query, 0).stmt
    if not isinstance(statement, ast.SelectStmt):
        kind = type(statement).__name__.removesuffix("Stmt")
        raise ConfigError(f"`query` must be a SELECT (or VALUES), got {kind}")
    _require_read_only("query", statement)
    return query


def tables_read(query: str) -> list[tuple[str, str]]:
    """(schema, table) of each table or view a checked `query` reads, in order of
    appearance, once each; CTE names are not tables. An unqualified name is `public`."""
    statement = parse_sql(query)[0].stmt
    ctes = {n.ctename for n in _nodes(statement) if isinstance(n, ast.CommonTableExpr)}
    found: list[tuple[str, str]] = []
    for node in _nodes(statement):
        if isinstance(node, ast.RangeVar) and not (node.schemaname is None and node.relname in ctes):
            ref = (node.schemaname or "public", node.relname)
            if ref not in found:
                found.append(ref)
    return found


def columns_named(condition: str) -> set[str]:
    """The column names a checked `where` refers to (the last part of each reference)."""
    statement = parse_sql(_WHERE_PREFIX + condition + "\n)")[0].stmt
    return {
        node.fields[-1].sval
        for node in _nodes(statement)
        if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String)
    }


@dataclass(frozen=True)
class Calls:
    """What a checked `where` or `query` asks the server to run besides reading rows:
    functions and operators by (schema or None, name), casts by target type name parts.
    `side_effects.py` looks each up in a server's catalog."""

    functions: tuple[tuple[str | None, str], ...] = ()
    operators: tuple[tuple[str | None, str], ...] = ()
    types: tuple[tuple[str, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.functions or self.operators or self.types)


def _qualified(names: tuple) -> tuple[str | None, str]:
    parts = [n.sval for n in names]
    return (parts[-2] if len(parts) > 1 else None, parts[-1])


def calls(condition: str | None = None, query: str | None = None) -> Calls:
    """The functions, operators and casts in a checked `where` and/or `query`."""
    statements = []
    if condition is not None:
        statements.append(parse_sql(_WHERE_PREFIX + condition + "\n)")[0].stmt)
    if query is not None:
        statements.append(parse_sql(query)[0].stmt)
    functions: dict = {}
    operators: dict = {}
    types: dict = {}
    for node in (n for statement in statements for n in _nodes(statement)):
        if isinstance(node, ast.FuncCall):
            functions[_qualified(node.funcname)] = None
        elif isinstance(node, ast.A_Expr) and node.name:
            name = _qualified(node.name)
            # BETWEEN and its kin are keywords here; their operators are the type's own.
            if not any(ch.isalpha() for ch in name[1]):
                operators[name] = None
        elif isinstance(node, ast.TypeCast) and node.typeName is not None:
            types[tuple(n.sval for n in node.typeName.names)] = None
    return Calls(tuple(functions), tuple(operators), tuple(types))
