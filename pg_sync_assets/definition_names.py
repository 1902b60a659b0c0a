"""The names of the Dagster definitions the table list produces, in one place.

Jobs, schedules and ops are named after each table's `ident` (its asset key joined by
`__`: `sync_<ident>`, `reconcile_<ident>_table`, ...), next to fixed names (`sync_all`,
`verify_all`, ...). A list with a top-level `name:` prefixes all of them
(`<name>_sync_all`), so that several lists (component instances) live in one code
location. Two definitions with one name make Dagster refuse the whole code location
with a message that names neither the file nor the entry ("Duplicate definition found
for unresolved job"), so the table list is checked here, when it loads, and the error
says which entry to rename. Pure: no Dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass

from .engine.errors import ConfigError
from .project import TableEntry


@dataclass(frozen=True)
class Names:
    """Job and schedule names of one table list (`prefix` is its `name:` plus `_`, or empty)."""

    prefix: str = ""

    @classmethod
    def of(cls, list_name: str | None) -> Names:
        return cls(f"{list_name}_" if list_name else "")

    @property
    def sync_all(self) -> str:
        return f"{self.prefix}sync_all"

    @property
    def reconcile_all(self) -> str:
        return f"{self.prefix}reconcile_all"

    @property
    def verify_all(self) -> str:
        return f"{self.prefix}verify_all"

    @property
    def sync_daily(self) -> str:
        return f"{self.prefix}sync_daily"

    @property
    def sync_daily_schedule(self) -> str:
        return f"{self.prefix}sync_daily_schedule"

    @property
    def reconcile_daily(self) -> str:
        return f"{self.prefix}reconcile_daily"

    def fixed(self) -> list[str]:
        return [
            self.sync_all,
            self.reconcile_all,
            self.verify_all,
            self.sync_daily,
            self.sync_daily_schedule,
            self.reconcile_daily,
        ]

    def cdc_job(self, connection: str) -> str:
        """The job that applies the changes of a source connection's `cdc` tables."""
        return f"{self.prefix}cdc_{connection}"

    def cdc_schedule(self, connection: str) -> str:
        return f"{self.prefix}cdc_{connection}_schedule"

    def sync_job(self, entry: TableEntry) -> str:
        return f"{self.prefix}sync_{entry.ident}"

    def cron_schedule(self, entry: TableEntry) -> str:
        return f"{self.prefix}sync_{entry.ident}_schedule"

    def hourly_schedule(self, entry: TableEntry) -> str:
        return f"{self.prefix}sync_{entry.ident}_hourly"

    def reconcile_job(self, entry: TableEntry) -> str:
        return f"{self.prefix}reconcile_{entry.ident}"

    def reconcile_schedule(self, entry: TableEntry) -> str:
        return f"{self.prefix}reconcile_{entry.ident}_daily"

    def reconcile_op(self, entry: TableEntry) -> str:
        return f"reconcile_{entry.ident}_table"

    def op_names(self, entry: TableEntry) -> list[str]:
        """The ops named after this table, besides its asset's own."""
        return [self.reconcile_op(entry)] if entry.spec.hourly else []

    def runnable_names(self, entry: TableEntry) -> list[str]:
        """The jobs and schedules named after this table."""
        if entry.spec.hourly:
            return [
                self.sync_job(entry),
                self.hourly_schedule(entry),
                self.reconcile_job(entry),
                self.reconcile_schedule(entry),
            ]
        if entry.spec.schedule is not None:
            return [self.sync_job(entry), self.cron_schedule(entry)]
        return []


def asset_op(entry: TableEntry) -> str:
    """The op (the step) that materializes `entry`: its own, or its snapshot group's."""
    group = entry.spec.snapshot_group
    return f"snapshot_group_{group}" if group is not None else entry.ident


def reject_name_collisions(entries: list[TableEntry], list_name: str | None, where: str) -> None:
    """ConfigError naming the entries whose definitions would share a name."""
    names = Names.of(list_name)
    runnables: dict[str, str] = {name: "pg_sync_assets itself" for name in names.fixed()}
    ops: dict[str, str] = {}
    for entry in entries:
        if entry.spec.mode.value == "cdc":
            connection = entry.source_connection
            for name in (names.cdc_job(connection), names.cdc_schedule(connection)):
                runnables.setdefault(name, f"the cdc tables of connection `{connection}`")
    for entry in entries:
        owner = ops.setdefault(entry.ident, f"the asset of `{entry.name}`")
        if owner != f"the asset of `{entry.name}`":
            raise ConfigError(
                f"{where}: table entry `{entry.name}` (target `{entry.spec.target}`) would define the op "
                f"`{entry.ident}`, which {owner} already defines; change its `name:` or `key_prefix:`"
            )
    for entry in entries:
        mine = f"table `{entry.ident}`"
        for name, taken, kind in [(n, runnables, "job/schedule") for n in names.runnable_names(entry)] + [
            (n, ops, "op") for n in names.op_names(entry)
        ]:
            owner = taken.setdefault(name, mine)
            if owner != mine:
                raise ConfigError(
                    f"{where}: table entry `{entry.name}` (target `{entry.spec.target}`) would define the "
                    f"{kind} `{name}`, which {owner} already defines; set a different `name:` "
                    "on this entry"
                )
