"""The demo's runs, as many at a time as the instance's run queue allows (`threads.concurrent_runs()`).

Dagster's in-process execution is not thread-safe (a run configures Python logging while another one logs, and the
two deadlock), so the runs go to a small pool of worker processes: each imports the code location once and
executes the runs it is given in process, against the persistent instance under ONTOS_HOME and the shared Spark
engine. On 2 cores two runs at a time keep both busy: one run alone leaves a third of the machine idle while it
waits on Spark, MLflow or SQLite. The parent reads each run back from the instance, so the summaries are built from
the same events as before.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

_DEFINITIONS: Any = None  # the worker's code location, built once per worker process


@dataclass(frozen=True)
class RunRequest:
    job: str
    partition: str
    run_config: dict
    tags: dict


@dataclass(frozen=True)
class FinishedRun:
    request: RunRequest
    result: Any  # ExecuteInProcessResult, read back from the instance
    seconds: float


def _start_worker(verbose: bool) -> None:
    global _DEFINITIONS
    import logging

    from ontos_pipeline.definitions import build_definitions

    if not verbose:
        logging.getLogger("mlflow").setLevel(logging.ERROR)  # as in the demo's own process
    _DEFINITIONS = build_definitions()


def _execute(request: RunRequest) -> tuple[str, float]:
    from dagster import DagsterInstance

    started = time.perf_counter()
    result = _DEFINITIONS.resolve_job_def(request.job).execute_in_process(
        partition_key=request.partition,
        instance=DagsterInstance.get(),
        run_config=request.run_config,
        raise_on_error=False,
        tags=request.tags,
    )
    return result.run_id, time.perf_counter() - started


def result_of(instance, job_def, run_id: str):
    """The `ExecuteInProcessResult` of a finished run, rebuilt from the instance's event log."""
    from dagster import ExecuteInProcessResult

    events = [entry.dagster_event for entry in instance.all_logs(run_id) if entry.is_dagster_event]
    return ExecuteInProcessResult(events, instance.get_run_by_id(run_id), None, job_def)


class RunPool:
    """Worker processes that execute demo runs; use as a context manager for the whole demo."""

    def __init__(self, definitions, instance, workers: int, verbose: bool = False):
        self.definitions, self.instance = definitions, instance
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(verbose,),
        )

    def __enter__(self) -> RunPool:
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def run(
        self, requests: Sequence[RunRequest], on_finish: Callable[[FinishedRun], None] | None = None
    ) -> list[FinishedRun]:
        """Execute `requests` (at most `workers` at once); the finished runs in the order of `requests`."""
        futures = {self.executor.submit(_execute, r): i for i, r in enumerate(requests)}
        done: dict[int, FinishedRun] = {}
        for future in as_completed(futures):
            request = requests[futures[future]]
            run_id, seconds = future.result()
            job = self.definitions.resolve_job_def(request.job)
            done[futures[future]] = finished = FinishedRun(request, result_of(self.instance, job, run_id), seconds)
            if on_finish is not None:
                on_finish(finished)
        return [done[i] for i in range(len(requests))]
