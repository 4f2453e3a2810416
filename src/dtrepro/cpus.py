"""How many CPUs this process may really use, and torch's CPU threads set from that before torch starts them.

torch sizes its OpenMP pool by the cores of the machine, and GNU OpenMP's workers spin-wait for work
between parallel regions. On a machine whose other cores are busy (a laptop, a cloud VM, a shared
cluster node, DVC's queue running two experiments, CI) a worker spins for a partner that is not
scheduled, and a training step takes up to 40 times longer (bench/threads.py). So every stage sizes
its threads, its worker processes and its env-stepping threads by `usable_cpus()`: the CPUs the
process is allowed (its affinity mask), the cgroup's CPU quota, and `SLURM_CPUS_PER_TASK`, whichever
is smallest, or `DTREPRO_CPUS` when set. And OpenMP's idle workers spin only briefly (`OMP_SPIN_COUNT`)
before they sleep, leaving the core to whoever needs it. The thread count is fixed by those limits
alone, never by the load of the moment, so that the same inputs give the same bits. OpenMP reads its
settings once, when torch loads it, so `set_thread_defaults` runs when the `dtrepro` package is
imported, before any of its modules imports torch; a value the user set in the environment
(`OMP_NUM_THREADS`, `GOMP_SPINCOUNT`, `OMP_WAIT_POLICY`) is left as it is.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from dtrepro.errors import DtreproError

CPUS_VAR = "DTREPRO_CPUS"  # the explicit setting: the CPUs every stage may use
# Spins before an idle OpenMP worker sleeps: the count GNU OpenMP itself falls back to when its threads
# outnumber the CPUs (its default otherwise, 300,000, spins for milliseconds). bench/threads.py on a 2-core
# machine, demo preset: beside a busy process or a second training the default spin made steps 2.6x to 23x
# slower, this one 1.7x to 2x (a fair share of the cores), at about a tenth slower alone; 10,000 spins were as
# slow alone and 3.5x slower beside a busy process.
OMP_SPIN_COUNT = 1_000
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per controller ("" for cgroup v2's unified hierarchy)."""
    paths = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _read(folder: Path, path: str, name: str) -> str | None:
    """A cgroup file: under this process's own cgroup, else at the mount's top (inside a container)."""
    for candidate in (folder / path.lstrip("/") / name, folder / name):
        try:
            return candidate.read_text().strip()
        except OSError:
            continue
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The CPUs this process's cgroup quota allows (rounded up), or None where no quota is set."""
    paths = _cgroup_paths(proc_cgroup)
    if "" in paths:  # cgroup v2: "max 100000" or "<quota> <period>"
        text = _read(root, paths[""], "cpu.max")
        if text and not text.startswith("max"):
            quota, period = (int(x) for x in text.split()[:2])
            return max(1, math.ceil(quota / period))
    if "cpu" in paths:  # cgroup v1: cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us
        for mount in ("cpu", "cpu,cpuacct"):
            quota, period = (_read(root / mount, paths["cpu"], f"cpu.cfs_{x}_us") for x in ("quota", "period"))
            if quota and period:
                return max(1, math.ceil(int(quota) / int(period))) if int(quota) > 0 else None
    return None


def _positive(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DtreproError(f"{name} is {text!r}; it must be a whole number of CPUs, at least 1 (or unset).")
    return value


def usable_cpus() -> int:
    """The CPUs this process may use: DTREPRO_CPUS if set, else the smallest of its affinity mask, its cgroup's
    CPU quota and SLURM_CPUS_PER_TASK."""
    if os.environ.get(CPUS_VAR):
        return _positive(CPUS_VAR, os.environ[CPUS_VAR])
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]
    limits.append(cgroup_cpu_limit() or limits[0])
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        limits.append(_positive("SLURM_CPUS_PER_TASK", os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, min(limits))


def torch_threads() -> int:
    """torch's CPU threads: OMP_NUM_THREADS where the user set it, else the usable CPUs."""
    cpus, explicit = usable_cpus(), os.environ.get("OMP_NUM_THREADS")
    return _positive("OMP_NUM_THREADS", explicit) if explicit else cpus


def thread_settings() -> dict[str, str]:
    """The environment OpenMP starts with: the user's own values, else ours."""
    ours = {"OMP_NUM_THREADS": str(usable_cpus())}
    if "OMP_WAIT_POLICY" not in os.environ:  # an explicit wait policy sets the spin count itself
        ours["GOMP_SPINCOUNT"] = str(OMP_SPIN_COUNT)
    return {key: os.environ.get(key, value) for key, value in ours.items()}


def set_thread_defaults() -> None:
    """Put `thread_settings()` into the environment (for torch, and for every child process). A DTREPRO_CPUS
    that is not a number is left for the stage to refuse (`usable_cpus`), with its paragraph."""
    try:
        os.environ.update(thread_settings())
    except DtreproError:
        return
    if "torch" in sys.modules:  # loaded before us: its OpenMP keeps its spin, but takes the thread count
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
