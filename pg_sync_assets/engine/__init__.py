"""The sync engine: plain Python and psycopg2, no dagster import anywhere below here."""

from .connect import ConnectionFailed, connect
from .errors import ConfigError, LockTimeoutError, PgSyncError, SchemaMismatchError, SyncError
from .guard import LoadVerification, VerificationError
from .plan import TablePlan, plan_table
from .reconcile import reconcile_table
from .run import SyncOptions
from .spec import Mode, TableRef, TableSpec
from .sync import SyncResult, sync_table

__all__ = [
    "ConfigError",
    "ConnectionFailed",
    "LoadVerification",
    "LockTimeoutError",
    "Mode",
    "PgSyncError",
    "SchemaMismatchError",
    "SyncError",
    "SyncOptions",
    "SyncResult",
    "TablePlan",
    "TableRef",
    "TableSpec",
    "VerificationError",
    "connect",
    "plan_table",
    "reconcile_table",
    "sync_table",
]
