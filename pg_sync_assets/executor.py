"""The code location's executor: a process per step, except for a run of one step.

Dagster's default executor starts a process for every step, so a run that materializes
one table (`dagster asset materialize --select orders`, a table's own job, a schedule's
tick) takes two processes: the run's, which only waits, and the step's. Here a run of
one step executes it in the run's own process; a run of several steps gets a process
per step, forked from a server that has already imported Dagster and this package
(`step_preload.py`) instead of fresh interpreters that import both again. Forking is
safe because loading the definitions opens no connection: nothing is shared across it.

Run config keeps Dagster's choices (the same schema as `multi_or_in_process_executor`):
`in_process` runs every step in the run's process; `multiprocess` takes
`max_concurrent`, `retries` and a `start_method` (the fork server is only the default).
"""

from __future__ import annotations

from collections.abc import Iterator

from dagster import executor, multi_or_in_process_executor
from dagster._core.executor.base import Executor
from dagster._core.executor.in_process import InProcessExecutor

# What the fork server imports once for every step process it forks (`step_preload`):
# the code location's own module is then a cheap import in each step.
PRELOAD = ["pg_sync_assets.step_preload"]


class OneStepInProcess(Executor):
    """`multiprocess` for runs of several steps; a run of one step runs in process, with
    the same retry mode and step dependency settings."""

    def __init__(self, multiprocess: Executor) -> None:
        self._multiprocess = multiprocess
        self._in_process = InProcessExecutor(
            retries=multiprocess.retries, step_dependency_config=multiprocess.step_dependency_config
        )

    @property
    def retries(self):
        return self._multiprocess.retries

    @property
    def step_dependency_config(self):
        return self._multiprocess.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator:
        one_step = len(execution_plan.step_keys_to_execute) == 1
        chosen = self._in_process if one_step else self._multiprocess
        yield from chosen.execute(plan_context, execution_plan)


@executor(
    name="pg_sync_executor",
    config_schema=multi_or_in_process_executor.config_schema.as_field(),
    requirements=multi_or_in_process_executor.get_requirements,
)
def _pg_sync_executor(init_context) -> Executor:
    chosen = multi_or_in_process_executor.executor_creation_fn(init_context)
    if "multiprocess" in init_context.executor_config:
        return OneStepInProcess(chosen)
    return chosen


def _forkserver_by_default(config: dict) -> dict:
    if "in_process" in config:
        return config
    multiprocess = dict(config.get("multiprocess") or {})
    multiprocess.setdefault("start_method", {"forkserver": {"preload_modules": PRELOAD}})
    return {"multiprocess": multiprocess}


# One object, so that the Definitions of several table lists merge (Dagster compares
# executors by identity).
EXECUTOR = _pg_sync_executor.configured(
    _forkserver_by_default,
    config_schema=multi_or_in_process_executor.config_schema.as_field(),
    name="pg_sync_executor",
)
