"""How many CPUs this process may really use, and torch's CPU threads: sized from that, then following the load.

torch sizes its OpenMP pool by the cores of the machine, and GNU OpenMP's workers spin-wait for work
between parallel regions. On a machine whose other cores are busy (a laptop, a cloud VM, a shared
cluster node, DVC's queue running two experiments, CI) a worker spins for a partner that is not
scheduled, and a training step takes up to 40 times longer (bench/threads.py). So every stage sizes
its threads, its worker processes and its env-stepping threads by `usable_cpus()`: the CPUs the
process is allowed (its affinity mask), the cgroup's CPU quota, and `SLURM_CPUS_PER_TASK`, whichever
is smallest, or `DTREPRO_CPUS` when set. The training and evaluation loops then call `follow_load()`:
twice a second it reads how much of those CPUs other processes used (`/proc/stat`, less this process's
own time) and gives torch only the CPUs left free, at least one, so that no worker waits for a core
that is not there; alone, torch keeps every usable CPU and OpenMP's own long spin, which is what makes
it fast. The thread count does not change the bits of a bf16-autocast training step or of a forward pass
(`dtrepro.agent.model.LayerNorm`; tested); a float32 training step on the CPU it does change, so there the
count stays fixed. OpenMP reads its settings once, when torch loads it, so `set_thread_defaults` runs when
the `dtrepro` package is imported, before any of its modules imports torch; an `OMP_NUM_THREADS` the user
set is kept, fixed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from dtrepro.errors import DtreproError

CPUS_VAR = "DTREPRO_CPUS"  # the explicit setting: the CPUs every stage may use
OURS_VAR = "DTREPRO_OMP_DEFAULTS"  # the OpenMP settings the project chose (not the user): those it may change
FOLLOW_EVERY_S = 0.5  # how often the thread count is checked against the load
STAT = Path("/proc/stat")
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
        cpus, machine = _positive(CPUS_VAR, os.environ[CPUS_VAR]), os.cpu_count() or 1
        if cpus > machine:
            raise DtreproError(
                f"{CPUS_VAR} is {cpus}, but this machine has {machine} CPUs: that many threads and workers would "
                f"only take turns. Set it to at most {machine}, or unset it to use what this process may use."
            )
        return cpus
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
    """The environment OpenMP starts with: the user's own thread count, else the usable CPUs (and a note that
    the project chose it, which `follow_load` may then lower)."""
    if os.environ.get("OMP_NUM_THREADS") and os.environ.get(OURS_VAR) != "OMP_NUM_THREADS":
        return {"OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}
    return {"OMP_NUM_THREADS": str(usable_cpus()), OURS_VAR: "OMP_NUM_THREADS"}


def set_thread_defaults() -> None:
    """Put `thread_settings()` into the environment (for torch, and for every child process). A DTREPRO_CPUS
    that is not a number is left for the stage to refuse (`usable_cpus`), with its paragraph."""
    try:
        os.environ.update(thread_settings())
    except DtreproError:
        return
    if "torch" in sys.modules:  # loaded before us: it takes the thread count still
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def busy_ticks(cpus: set[int], stat: Path = STAT) -> int | None:
    """Clock ticks the CPUs `cpus` have spent busy (user, nice, system, irq, softirq, and steal: time the host
    gave to someone else), or None where /proc/stat cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _, _, irq, softirq, steal = (int(x) for x in fields[:8])
            total += user + nice + system + irq + softirq + steal
    return total


def threads_for(free: float, current: int, cpus: int) -> int:
    """The thread count for `free` CPUs: one less as soon as half a CPU is taken, one more once the CPU is
    all but free again (hysteresis, so that a count does not flap), at least one, at most `cpus`."""
    if math.floor(free + 0.5) < current:
        return max(1, math.floor(free + 0.5))
    if math.floor(free + 0.2) > current:
        return min(cpus, math.floor(free + 0.2))
    return current


class Governor:
    """torch's thread count, following the CPUs other processes leave free (see the module's docstring)."""

    def __init__(self, stat: Path = STAT, clock=time.monotonic, same_bits: bool = True):
        self.cpus, self.stat, self.clock = torch_threads(), stat, clock
        self.allowed = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self.threads, self.last = self.cpus, self._sample()
        ours = os.environ.get(OURS_VAR) == "OMP_NUM_THREADS"
        self.active = same_bits and ours and self.cpus > 1 and self.last[1] is not None

    def _sample(self) -> tuple[float, int | None, float]:
        times = os.times()
        return self.clock(), busy_ticks(self.allowed, self.stat), times.user + times.system

    def others(self, before: tuple, after: tuple) -> float:
        """CPUs other processes used between two samples: the allowed CPUs' busy time less this process's."""
        elapsed = after[0] - before[0]
        busy = (after[1] - before[1]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, (busy - (after[2] - before[2])) / elapsed) if elapsed > 0 else 0.0

    def tick(self) -> int:
        """Check the load if it is time to, and set torch's threads; the thread count in use."""
        if self.active and self.clock() - self.last[0] >= FOLLOW_EVERY_S:
            sample = self._sample()
            if sample[1] is not None:
                free = min(self.cpus, len(self.allowed) - self.others(self.last, sample))  # left to this process
                threads = threads_for(free, self.threads, self.cpus)
                if threads != self.threads:
                    import torch

                    torch.set_num_threads(threads)
                    self.threads = threads
            self.last = sample
        return self.threads


_governor: Governor | None = None


def follow_load(restart: bool = False, same_bits: bool = True) -> int:
    """The process's governor's `tick()` (made, and torch's threads set to the usable CPUs, on the first call
    or with `restart`): call it once a step in a compute loop. `same_bits=False` where the work's results
    depend on the thread count (a float32 training step on the CPU: torch's softmax backward and some of
    MKL's matrix products): the count then stays fixed."""
    global _governor
    if _governor is None or restart:
        import torch

        _governor = Governor(same_bits=same_bits)
        torch.set_num_threads(_governor.threads)
    return _governor.tick()
