"""The target table's own triggers, and the table list's choice about them
(`target_triggers`): `fire` (the default) or `disable`.

A target made with `pg_dump -s` brings the source's triggers along (pagila's
`last_updated` rewrites `last_update` on every update), so the rows the sync writes are
not the rows it copied, and verification rightly fails. With `disable`, the enabled user
triggers of the target (not the internal ones that enforce foreign keys) are disabled
inside the run's final transaction and enabled again, each in its own mode, before it
commits: other sessions never see them disabled, and a rollback undoes both. Copy tools
do the same with `session_replication_role = replica`, which needs a superuser and also
turns foreign keys off; this needs only ownership of the table.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from psycopg2 import sql

from ..plan.spec import TableRef

FIRE, DISABLE = "fire", "disable"
TARGET_TRIGGER_CHOICES = (FIRE, DISABLE)

# Enabled in an ordinary session: 'O' (origin and local) and 'A' (always).
_TRIGGERS_QUERY = """
SELECT t.tgname, t.tgtype, t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
ORDER BY t.tgname
"""
_EVENTS = ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))


@dataclass(frozen=True)
class Trigger:
    name: str
    kind: int  # pg_trigger.tgtype
    enabled: str  # pg_trigger.tgenabled

    def describe(self) -> str:
        timing = "INSTEAD OF" if self.kind & 64 else "BEFORE" if self.kind & 2 else "AFTER"
        events = " OR ".join(name for bit, name in _EVENTS if self.kind & bit)
        return f"`{self.name}` ({timing} {events}, for each {'row' if self.kind & 1 else 'statement'})"


def user_triggers(cur, table: TableRef) -> list[Trigger]:
    """The target's enabled triggers that are not PostgreSQL's own (foreign keys)."""
    cur.execute(_TRIGGERS_QUERY, (table.schema, table.name))
    return [Trigger(*row) for row in cur.fetchall()]


def triggers_advice(triggers: list[Trigger]) -> str:
    """What a message says about triggers that fired on the written rows."""
    return (
        f"the target table's trigger(s) {', '.join(t.describe() for t in triggers)} fire on the rows "
        "the sync writes and may change them; set `target_triggers: disable` for this table to write "
        "the rows as the source has them (the triggers stay on for everyone else)"
    )


# Triggers disabled in a connection's open final transaction, to enable before it commits.
_disabled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def disable_user_triggers(cur, table: TableRef) -> list[Trigger]:
    """In the final transaction: disable `table`'s enabled user triggers; `restore_triggers`
    enables them again before the commit."""
    triggers = user_triggers(cur, table)
    for trigger in triggers:
        cur.execute(
            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(table.ident, sql.Identifier(trigger.name))
        )
        _disabled.setdefault(cur.connection, []).append((table, trigger))
    return triggers


def restore_triggers(cur) -> None:
    """Enable, each in its own mode, what `disable_user_triggers` disabled on this connection."""
    for table, trigger in _disabled.pop(cur.connection, []):
        mode = sql.SQL("ENABLE ALWAYS" if trigger.enabled == "A" else "ENABLE")
        cur.execute(
            sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(table.ident, mode, sql.Identifier(trigger.name))
        )


def forget_disabled(conn) -> None:
    """The final transaction ended without a commit: its rollback undid the disabling."""
    _disabled.pop(conn, None)
