"""What the step executor's fork server imports once, so that each step process it forks
starts with it already imported (see `executor.py`): Dagster, this package, and the
instance and storage machinery every step process loads before its step can start
(about 0.6 s of imports a step here: alembic, SQLAlchemy, the SQLite and PostgreSQL
storages). Importing opens no connection and starts no thread, so forking after it is
safe."""

import alembic.command  # noqa: F401
import dagster  # noqa: F401
import dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log  # noqa: F401
import dagster._core.storage.event_log.sqlite.sqlite_event_log  # noqa: F401
import dagster._core.storage.local_compute_log_manager  # noqa: F401
import dagster._core.storage.runs.sqlite.sqlite_run_storage  # noqa: F401
import dagster._core.storage.schedules.sqlite.sqlite_schedule_storage  # noqa: F401
import dagster._daemon  # noqa: F401
import dagster._grpc  # noqa: F401
import dagster._scheduler  # noqa: F401
import dagster_postgres  # noqa: F401

from . import build  # noqa: F401
