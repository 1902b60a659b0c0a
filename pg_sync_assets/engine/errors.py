"""The one error hierarchy of pg_sync_assets.

Every message names the table (in backticks), the stage and the cause, and says what
to do. Messages never contain connection strings or passwords: connection errors are
re-raised with the server's own text, which libpq keeps free of passwords.
"""

from __future__ import annotations


class PgSyncError(Exception):
    """Base class: anything pg_sync_assets refuses or fails to do."""


class ConfigError(PgSyncError):
    """The table list is invalid: unknown key, bad value, missing table or column."""


class SchemaMismatchError(PgSyncError):
    """An existing target table does not match the source columns."""


class SyncError(PgSyncError):
    """A stage of a sync failed; the target is exactly as it was before the run (the
    message says so, or says when it cannot know: a connection lost during commit).

    `side` is the server the failure came from (`source` or `target`), when known.
    """

    def __init__(self, table: str, stage: str, cause: str, side: str | None = None) -> None:
        self.table = table
        self.stage = stage
        self.cause = cause
        self.side = side
        on = f" on the {side} server" if side else ""
        super().__init__(f"{stage} failed for `{table}`{on}: {cause}")


class LockTimeoutError(SyncError):
    """Another run holds the table's advisory lock for longer than lock_timeout."""
