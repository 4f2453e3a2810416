"""Seeded episodes and rollouts spread over the CPUs this process may use, each job in a worker process.

Every job is fixed by its own seed (an episode by its reset seed, a rollout by its
env and action-noise seeds) and results come back in the order the jobs were given,
so a dataset is the same, byte for byte, however many workers made it. One process
steps one MuJoCo env at a time, so two CPUs collect about twice as fast as one; there is one worker
per usable CPU (`dtrepro.runtime.threads.usable_cpus`: the affinity mask, a cgroup quota, SLURM_CPUS_PER_TASK
or DTREPRO_CPUS), not per core of the machine.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from typing import Callable, Iterator

from dtrepro.runtime.threads import usable_cpus


@contextlib.contextmanager
def worker_map(workers: int | None = None) -> Iterator[Callable]:
    """A `map` whose calls run in `workers` processes (default: one per usable CPU); the built-in `map` for one.

    The function and its arguments must pickle: module-level functions, plain data.
    """
    workers = workers or usable_cpus()
    if workers == 1:
        yield map
        return
    # forkserver: the workers do not inherit the parent's threads (tqdm's monitor, BLAS pools). Leaving the
    # block on an error, Ctrl-C or SIGTERM terminates the workers; at the end of the work they are closed and
    # joined, which releases the pool's semaphores before the process exits (no "leaked semaphore" warning).
    pool = multiprocessing.get_context("forkserver").Pool(workers)
    try:
        yield pool.imap
        pool.close()
    finally:
        pool.terminate()
        pool.join()
