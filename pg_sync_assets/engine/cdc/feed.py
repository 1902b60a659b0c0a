"""A source connection's change feed: one publication and one logical replication slot
(`pgoutput`) that every `cdc` table of the connection shares.

What this writes on the source, and only for `cdc` tables: the publication (created, a
table added or dropped), the slot (created, advanced, dropped) and, for a first copy, a
temporary slot that lives as long as the copy's snapshot. Everything else stays
read-only. The slot is advanced only to the lowest position every member table's
target has recorded (`state.py`), under an advisory lock that a first copy holds shared
from the moment its snapshot is taken until its position is recorded: a slot never moves
past changes some target has not applied.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from ..connect import replication_session
from ..errors import ConfigError
from ..plan.spec import TableRef
from .pgoutput import Message, lsn_int, lsn_text, parse

SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
PLUGIN = "pgoutput"
# Advisory lock keys (two int4): the feed's class, then the slot's name hashed by the server.
_LOCK_CLASS = 0x70677363  # "pgsc"


@dataclass(frozen=True)
class Feed:
    """The names of a connection's slot and publication."""

    connection: str
    slot: str
    publication: str

    @classmethod
    def default(cls, connection: str) -> Feed:
        base = re.sub(r"[^a-z0-9_]", "_", connection.lower())[:40]
        return cls(connection, f"pg_sync_{base}", f"pg_sync_{base}")


def check_slot_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not SLOT_NAME.match(name):
        raise ConfigError(
            f"{where}: {name!r} is not a replication slot name PostgreSQL accepts "
            "(lower-case letters, digits and _, at most 63)"
        )
    return name


@dataclass(frozen=True)
class SlotStatus:
    exists: bool
    confirmed_lsn: int | None = None
    lag_bytes: int | None = None  # WAL written since the slot's confirmed position
    retained_bytes: int | None = None  # WAL the server keeps for the slot
    active: bool = False
    wal_status: str | None = None


def slot_status(cur, feed: Feed) -> SlotStatus:
    cur.execute(
        "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn() - confirmed_flush_lsn,"
        " pg_current_wal_lsn() - restart_lsn, active, wal_status"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (feed.slot,),
    )
    row = cur.fetchone()
    if row is None:
        return SlotStatus(False)
    confirmed, lag, retained, active, wal_status = row
    return SlotStatus(
        True,
        lsn_int(confirmed) if confirmed else None,
        int(lag) if lag is not None else None,
        int(retained) if retained is not None else None,
        active,
        wal_status,
    )


def feed_gap(cur, feed: Feed, table: TableRef) -> str | None:
    """Why the feed cannot give the table's changes since its last run (the slot is gone
    or lost its WAL, the table left the publication), or None."""
    cur.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (feed.slot,))
    row = cur.fetchone()
    if row is None:
        return f"the replication slot `{feed.slot}` does not exist"
    if row[0] == "lost":
        return f"the replication slot `{feed.slot}` lost the WAL it needed (max_slot_wal_keep_size)"
    cur.execute(
        "SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
        " WHERE p.pubname = %s AND r.prrelid = to_regclass(%s)",
        (feed.publication, table.ident.as_string(cur)),
    )
    if cur.fetchone() is None:
        return f"`{table}` is not in the publication `{feed.publication}`"
    return None


def require_logical(cur, label: str) -> None:
    cur.execute("SELECT current_setting('wal_level'), current_setting('server_version_num')::int")
    wal_level, version = cur.fetchone()
    if wal_level != "logical":
        raise ConfigError(
            f"`{label}` is `mode: cdc`, but its source server runs with wal_level={wal_level}; set "
            "wal_level=logical (postgresql.conf, or your managed service's logical replication "
            "setting) and restart the server"
        )
    if version < 140000:
        raise ConfigError(f"`{label}` is `mode: cdc`, which needs PostgreSQL 14 or later on the source")


def ensure_publication(cur, feed: Feed, table: TableRef) -> bool:
    """The feed's publication includes `table` (autocommit, a writable session); True when
    this call added it."""
    cur.execute("SELECT oid FROM pg_publication WHERE pubname = %s", (feed.publication,))
    pub = cur.fetchone()
    if pub is None:
        cur.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(feed.publication), table.ident
            )
        )
        return True
    cur.execute(
        "SELECT 1 FROM pg_publication_rel WHERE prpubid = %s AND prrelid = %s::regclass",
        (pub[0], table.ident.as_string(cur)),
    )
    if cur.fetchone() is not None:
        return False
    cur.execute(
        sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(feed.publication), table.ident)
    )
    return True


def ensure_slot(cur, feed: Feed) -> bool:
    """The feed's slot exists in this database with `pgoutput`; True when created now.
    Created after the publication: decoding from before a publication existed fails."""
    cur.execute(
        "SELECT plugin, database, slot_type FROM pg_replication_slots WHERE slot_name = %s", (feed.slot,)
    )
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (feed.slot, PLUGIN))
        return True
    plugin, database, slot_type = row
    cur.execute("SELECT current_database()")
    here = cur.fetchone()[0]
    if slot_type != "logical" or plugin != PLUGIN or database != here:
        raise ConfigError(
            f"connection `{feed.connection}`: the replication slot `{feed.slot}` exists but is not a "
            f"{PLUGIN} slot of database `{here}` (it is {slot_type}, {plugin}, database {database}); "
            "set `cdc_slot:` on the connection to a name of its own"
        )
    return False


@contextmanager
def exported_snapshot(source_conn) -> Iterator[tuple[str, int]]:
    """A temporary slot created on a replication session, exporting its snapshot; yields
    (snapshot name, consistent point). Every transaction that committed before the
    consistent point is in the snapshot; every later one is decoded by any slot whose
    position is at or before it. The snapshot can be imported while this lasts."""
    conn = replication_session(source_conn)
    try:
        cur = conn.cursor()
        name = f"pg_sync_tmp_{secrets.token_hex(6)}"
        cur.execute(
            sql.SQL("CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL {} EXPORT_SNAPSHOT").format(
                sql.Identifier(name), sql.Identifier(PLUGIN)
            )
        )
        _slot, consistent_point, snapshot, _plugin = cur.fetchone()
        yield snapshot, lsn_int(consistent_point)
    finally:
        conn.close()


def lock_key(feed: Feed) -> sql.Composed:
    return sql.SQL("{}, hashtext({})").format(sql.Literal(_LOCK_CLASS), sql.Literal(feed.slot))


@contextmanager
def first_copy_guard(cur, feed: Feed) -> Iterator[None]:
    """Held (shared) from before a first copy's snapshot until its position is recorded:
    the slot is not advanced meanwhile (session level, outlives the copy's transactions)."""
    cur.execute(sql.SQL("SELECT pg_advisory_lock_shared({})").format(lock_key(feed)))
    try:
        yield
    finally:
        try:
            cur.execute(sql.SQL("SELECT pg_advisory_unlock_shared({})").format(lock_key(feed)))
        except psycopg2.Error:
            pass  # a lost session has released it


def advance(cur, feed: Feed, position: int) -> int | None:
    """Move the slot's confirmed position up to `position` (never back); the new position,
    or None when a first copy holds the feed (the next run advances it) or the slot is gone."""
    cur.execute(sql.SQL("SELECT pg_try_advisory_xact_lock({})").format(lock_key(feed)))
    if not cur.fetchone()[0]:
        return None
    cur.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (feed.slot,)
    )
    row = cur.fetchone()
    if row is None or row[0] is None:
        return None
    if lsn_int(row[0]) >= position:
        return lsn_int(row[0])
    cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (feed.slot, lsn_text(position)))
    return position


def current_position(cur) -> int:
    """The source's WAL position a run reads up to: the *flushed* one. Decoding reads only
    flushed WAL, and with `synchronous_commit = off` a transaction can be committed and
    visible before its commit record is flushed: a bound past the flush position could
    record changes as applied that the decoder had not returned yet."""
    cur.execute("SELECT pg_current_wal_flush_lsn()::text")
    return lsn_int(cur.fetchone()[0])


def read_changes(conn, feed: Feed, upto: int, batch: int = 2000) -> Iterator[tuple[int, Message]]:
    """The feed's messages for transactions that committed before `upto`, in commit order,
    without consuming them (the slot moves only by `advance`); (row number, message).
    Read through a server-side cursor in the open transaction: bounded memory."""
    with conn.cursor(name=f"pg_sync_changes_{secrets.token_hex(4)}") as cur:
        cur.itersize = batch
        cur.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL,"
            " 'proto_version', '1', 'publication_names', %s)",
            (feed.slot, lsn_text(upto), quote_publication(feed.publication)),
        )
        for n, (data,) in enumerate(cur):
            yield n, parse(bytes(data))


def quote_publication(name: str) -> str:
    """`publication_names` is a comma-separated list of identifiers, read with quoting."""
    return '"' + name.replace('"', '""') + '"'


def drop_feed(cur, feed: Feed, tables: list[TableRef] | None = None) -> list[str]:
    """Remove `tables` from the publication, or (None) drop the slot and the publication;
    what was done, for the command's output (autocommit, a writable session)."""
    done = []
    if tables is not None:
        for table in tables:
            cur.execute(
                "SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
                " WHERE p.pubname = %s AND r.prrelid = to_regclass(%s)",
                (feed.publication, table.ident.as_string(cur)),
            )
            if cur.fetchone() is not None:
                cur.execute(
                    sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                        sql.Identifier(feed.publication), table.ident
                    )
                )
                done.append(f"removed `{table}` from publication `{feed.publication}`")
        return done
    cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (feed.slot,))
    row = cur.fetchone()
    if row is not None:
        if row[0] is not None:
            raise ConfigError(
                f"the slot `{feed.slot}` is in use by process {row[0]} (a run in progress?); "
                "try again when it has finished"
            )
        cur.execute("SELECT pg_drop_replication_slot(%s)", (feed.slot,))
        done.append(f"dropped replication slot `{feed.slot}` (the server no longer keeps WAL for it)")
    cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (feed.publication,))
    if cur.fetchone() is not None:
        cur.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(feed.publication)))
        done.append(f"dropped publication `{feed.publication}`")
    return done
