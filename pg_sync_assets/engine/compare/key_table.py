"""Where a run's differing keys go (`localize` with `keys_table`): an UNLOGGED table of
the target, written as they are found and read back in batches, joined on the server by
the deletes and the checksum from the changes. Memory holds one batch, however many
rows differ."""

from __future__ import annotations

import io
from collections.abc import Iterator

from psycopg2 import sql
from psycopg2.extensions import encodings

from ..connect import sibling_session
from ..load.staging import STAGING_SCHEMA
from ..plan.introspect import Column


class KeyTable:
    """Where a run's differing keys go, as they are found: an UNLOGGED table of the target
    (`kind`, then each key column's text), filled by COPY in batches from a session of its
    own (the run's target session is reading pass 2's stream meanwhile). Memory holds one
    batch, whatever the number of differences; the rows are read back in batches, and
    deletes and checks join the table on the server. Named after the run's staging table,
    so the run's cleanup (or the next run, after a kill) drops it."""

    BATCH = 20_000

    def __init__(self, target_conn, name: str, width: int) -> None:
        self.name, self.width = name, width
        self._conn = sibling_session(target_conn, readonly=False, purpose="differing keys")
        self._conn.autocommit = True
        self._lines: list[str] = []
        columns = [sql.SQL("kind text NOT NULL")] + [
            sql.SQL("{} text").format(sql.Identifier(f"c{i}")) for i in range(width)
        ]
        with self._conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STAGING_SCHEMA, name)))
            cur.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
                    sql.Identifier(STAGING_SCHEMA, name), sql.SQL(", ").join(columns)
                )
            )

    def add(self, kind: str, parts: list[str]) -> None:
        self._lines.append("\t".join([kind, *(_escape(p) for p in parts)]) + "\n")
        if len(self._lines) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            data = io.BytesIO("".join(self._lines).encode(encodings[self._conn.encoding]))
            self._lines.clear()
            with self._conn.cursor() as cur:
                cur.copy_expert(
                    sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(STAGING_SCHEMA, self.name)), data
                )

    def close(self) -> None:
        try:
            self.flush()
            with self._conn.cursor() as cur:
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGING_SCHEMA, self.name)))
        finally:
            self._conn.close()


def _escape(text: str) -> str:
    if "\\" not in text and "\t" not in text and "\n" not in text and "\r" not in text:
        return text
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def keys_condition(key: list[Column], table: str, kinds: tuple[str, ...]) -> sql.Composed:
    """`(k1, k2) IN (SELECT c0::t1, c1::t2 FROM <table> WHERE kind IN kinds)`: rows (of
    whatever table the key columns name) whose key a `KeyTable` lists as one of `kinds`."""
    return sql.SQL("({}) IN (SELECT {} FROM {} WHERE kind = ANY({}))").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in key),
        sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Identifier(f"c{i}"), c.type_sql) for i, c in enumerate(key)
        ),
        sql.Identifier(STAGING_SCHEMA, table),
        sql.Literal(list(kinds)),
    )


KEY_BATCH = 50_000  # keys a run holds at once when it reads them back from its `KeyTable`


def listed_keys(target_conn, table: str, kinds: tuple[str, ...], width: int) -> Iterator[list[list[str]]]:
    """The keys a `KeyTable` lists as one of `kinds`, `batch` at a time, each batch as one
    list of texts per key column (for `sql.key_in`). Read by a server-side cursor in a
    session of its own: memory holds one batch, and the run's target session stays free
    for the COPYs the keys feed (an open cursor there would forbid their FREEZE)."""
    batch = KEY_BATCH
    columns = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(width))
    reader = sibling_session(target_conn, readonly=True, purpose="differing keys")
    try:
        with reader.cursor(name="pg_sync_keys") as cur:
            cur.itersize = batch
            cur.execute(
                sql.SQL("SELECT {} FROM {} WHERE kind = ANY(%s)").format(
                    columns, sql.Identifier(STAGING_SCHEMA, table)
                ),
                (list(kinds),),
            )
            while rows := cur.fetchmany(batch):
                yield [[row[i] for row in rows] for i in range(width)]
    finally:
        reader.close()
