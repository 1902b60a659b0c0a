"""How a printed command launches a job or an asset, in the context the definitions were
loaded in: the code location module (`dagster ... -m pg_sync_assets.definitions`), a `dg`
project (`dg launch`), or another module that calls `build_defs` (its module name is not
known here: the message names the job and both ways to launch it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Launcher:
    """Templates of what a message prints: `{job}`; `{selection}` and `{config}` (empty,
    or ` --config-json '...'`)."""

    job: str
    assets: str

    def run_job(self, job: str) -> str:
        return self.job.format(job=job)

    def materialize(self, selection: str, config: str | None = None) -> str:
        return self.assets.format(selection=selection, config=f" --config-json '{config}'" if config else "")


MODULE = Launcher(
    "`dagster job execute -m pg_sync_assets.definitions -j {job}`",
    "`dagster asset materialize -m pg_sync_assets.definitions --select {selection}{config}`",
)
DG_LAUNCH = Launcher("`dg launch --job {job}`", "`dg launch --assets {selection}{config}`")
# `build_defs` in a module of the user's: name the job, and the two usual ways.
ANY_MODULE = Launcher(
    "the job `{job}` (`dagster job execute -m YOUR_DEFINITIONS_MODULE -j {job}`, or `dg launch --job {job}` "
    "in a dg project)",
    "`dagster asset materialize -m YOUR_DEFINITIONS_MODULE --select {selection}{config}` (in a dg project "
    "`dg launch --assets {selection}{config}`)",
)
