"""Thread pools sized to the machine and to the runs that share it, set by the project and overridable.

On a 2-core machine two Dagster runs (the instance's run queue allows `concurrent_runs()` at once), the Spark
engine and a serving process share the cores. Native pools that size themselves to every core oversubscribe it:
scikit-learn's OpenMP threads spin-wait for each other (one `trained_model` took 845 s instead of 47 s). So:

- OpenMP waits passively (`OMP_WAIT_POLICY=PASSIVE`, set on import of the package unless set already);
- a step's native pools (OpenMP, BLAS) get `step_threads()` threads: the cores divided among the concurrent runs;
- the serving process predicts with one native thread per request and `serving_threads()` request threads;
- Spark's local cores are the engine's (`ONTOS_ENGINE_CORES`, see `engine.py`).

Variables: ONTOS_CONCURRENT_RUNS (2), ONTOS_STEP_THREADS, ONTOS_SERVE_THREADS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def _positive(name: str, default: int) -> int:
    text = os.environ.get(name) or str(default)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}={text!r} is not a positive integer")
    return int(text)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS
        return os.cpu_count() or 1


def concurrent_runs() -> int:
    """How many Dagster runs the local instance runs at once (its run queue's limit)."""
    return _positive("ONTOS_CONCURRENT_RUNS", 2)


def step_threads() -> int:
    """Native threads (OpenMP, BLAS) of one step: the machine's cores shared by the concurrent runs."""
    return _positive("ONTOS_STEP_THREADS", max(1, cpu_count() // concurrent_runs()))


def serving_threads() -> int:
    """Request threads of the serving process (model calls run outside the event loop)."""
    return _positive("ONTOS_SERVE_THREADS", max(4, 2 * cpu_count()))


def configure_openmp() -> None:
    """OpenMP threads that wait passively instead of spinning; must run before OpenMP starts (numpy, sklearn)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextmanager
def limited(threads: int) -> Iterator[None]:
    """Native thread pools (OpenMP, BLAS) capped at `threads` inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield
