"""Values the plugin left out of an UPDATE (out-of-line TOAST it did not change): each is
the value the row had before that UPDATE, taken from the latest earlier change of the
same row in the batch that carried it, else from the target (which holds the row as of
the recorded position)."""

from __future__ import annotations

from psycopg2 import sql

from ..errors import SyncError
from ..load.staging import STAGING_SCHEMA
from ..plan.introspect import Column
from .stream import OP, SEQ, UNCHANGED_COL, as_staged, ident, old_name, target_row


def _row(alias: str, names: list[str]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(ident(alias, n) for n in names))


def _flag(alias: str, i: int) -> sql.Composable:
    return sql.SQL("substr(COALESCE({}, ''), {}, 1)").format(ident(alias, UNCHANGED_COL), sql.Literal(i + 1))


def _entered_before(alias_row: str, key: list[Column], tbl: sql.Composable) -> sql.Composable:
    """The latest change before `alias_row`'s that made its old key exist (an insert, or an
    update that changed a key into it); NULL when the key existed before the batch."""
    knames = [k.name for k in key]
    olds = [old_name(i) for i in range(len(key))]
    return sql.SQL(
        "(SELECT max(e.{seq}) FROM {tbl} e WHERE {ek} = {so} AND e.{seq} < {s}.{seq}"
        " AND (e.{op} = 'I' OR (e.{op} = 'U' AND {eo} IS DISTINCT FROM {ek})))"
    ).format(
        seq=sql.Identifier(SEQ),
        op=sql.Identifier(OP),
        tbl=tbl,
        ek=_row("e", knames),
        eo=_row("e", olds),
        so=_row(alias_row, olds),
        s=sql.Identifier(alias_row),
    )


def resolve_unchanged(
    cur, changes: str, target, columns: list[Column], key: list[Column], after: int, pending: set[int]
) -> int:
    """Fill every left-out value of the columns `pending` (see the module docstring); the
    values filled. Raises SyncError when one cannot be found: nothing is applied then."""
    tbl = sql.Identifier(STAGING_SCHEMA, changes)
    knames = [k.name for k in key]
    olds = [old_name(i) for i in range(len(key))]
    filled = 0
    while True:
        progress = 0
        for i in sorted(pending):
            common = dict(
                tbl=tbl,
                col=sql.Identifier(columns[i].name),
                u=sql.Identifier(UNCHANGED_COL),
                clear=sql.SQL("overlay({} placing '0' from {} for 1)").format(
                    ident("s", UNCHANGED_COL), sql.Literal(i + 1)
                ),
                pk=_row("p", knames),
                seq=sql.Identifier(SEQ),
                op=sql.Identifier(OP),
                pflag=_flag("p", i),
            )
            # From the latest earlier change of the row (since it last came to exist) that carried it.
            cur.execute(
                sql.SQL(
                    "UPDATE {tbl} s SET {col} = r.v, {u} = {clear} FROM {tbl} s2 CROSS JOIN LATERAL ("
                    " SELECT p.{col} AS v FROM {tbl} p WHERE {pk} = {so} AND p.{seq} < s2.{seq}"
                    " AND p.{op} IN ('I', 'U') AND p.{seq} >= COALESCE({entered}, 0)"
                    " AND {pflag} <> '1' ORDER BY p.{seq} DESC LIMIT 1) r"
                    " WHERE s.{seq} = s2.{seq} AND {sflag} = '1' AND s2.{seq} > {after}"
                ).format(
                    so=_row("s2", olds),
                    entered=_entered_before("s2", key, tbl),
                    sflag=_flag("s2", i),
                    after=sql.Literal(after),
                    **common,
                )
            )
            progress += cur.rowcount
            if after == 0:  # no TRUNCATE in the batch: the target holds the rows it started from
                cur.execute(
                    sql.SQL(
                        "UPDATE {tbl} s SET {col} = {tv}, {u} = {clear} FROM {target} t"
                        " WHERE {tk} = {so} AND {sflag} = '1' AND {entered} IS NULL"
                        " AND NOT EXISTS (SELECT 1 FROM {tbl} p WHERE {pk} = {so} AND p.{seq} < s.{seq}"
                        " AND p.{op} IN ('I', 'U') AND {pflag} <> '1')"
                    ).format(
                        tv=as_staged("t", columns[i]),
                        target=target.ident,
                        tk=target_row("t", key),
                        so=_row("s", olds),
                        sflag=_flag("s", i),
                        entered=_entered_before("s", key, tbl),
                        **common,
                    )
                )
                progress += cur.rowcount
        filled += progress
        if progress == 0:
            break
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE position('1' in COALESCE({}, '')) > 0 AND {} > {}").format(
            tbl, sql.Identifier(UNCHANGED_COL), sql.Identifier(SEQ), sql.Literal(after)
        )
    )
    left = cur.fetchone()[0]
    if left:
        raise SyncError(
            str(target),
            "apply",
            f"{left} updated rows carry values the source left out as unchanged and that neither the "
            "batch nor the target holds; nothing was written; run `reconcile` on the table",
            side="target",
        )
    return filled
