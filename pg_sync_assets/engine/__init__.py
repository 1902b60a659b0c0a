"""The sync engine: plain Python and psycopg2, no dagster import anywhere below here."""

from .connect import ConnectionFailed, connect
from .errors import ConfigError, LockTimeoutError, PgSyncError, SchemaMismatchError, SyncError
from .plan.plan import TablePlan, plan_table
from .plan.spec import Mode, TableRef, TableSpec
from .run.context import SyncOptions
from .run.reconcile import reconcile_table
from .run.sync import SyncResult, sync_table
from .verify.guard import LoadVerification, VerificationError

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
