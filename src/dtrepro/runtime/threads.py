"""The CPUs a stage may use, its threads chosen once from them, and the processor facts results depend on.

torch sizes its OpenMP pool by the machine's cores, and GNU OpenMP's workers spin-wait 300,000 times for
work between parallel regions: beside other busy processes (a laptop, DVC's queue running two experiments, a
shared cluster node, CI) a worker spins for a partner that is not scheduled and a step takes up to 40 times
longer (bench/threads.py). So a stage (`runtime.stage.setup`, before torch loads) gives torch one thread per
CPU the process may use (`usable_cpus`) and a short spin, once: the count never changes during a run, so a
run's bits do not depend on the machine's load. An `OMP_NUM_THREADS`, `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY`
of the user's own is kept.

OpenBLAS, numpy's BLAS, picks its kernels by processor when numpy loads it (SkylakeX's with AVX-512,
Haswell's with AVX2); they round the last bit of a product differently and ARS amplifies that into other
collected data. So the stage also sets OPENBLAS_CORETYPE=Haswell where the processor runs those kernels
(every x86-64 of the last decade): a collection gives the same bytes on all of them.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

from threadpoolctl import threadpool_info

from dtrepro.runtime.errors import DtreproError

CPUS_VAR = "DTREPRO_CPUS"  # the explicit setting: the CPUs every stage may use
SPIN_COUNT = "1000"  # GNU OpenMP's spin before a worker sleeps: short, so that a busy neighbour costs little
CPUINFO = Path("/proc/cpuinfo")
BLAS_CORE_VAR, PINNED_CORE, PINNED_NEEDS = "OPENBLAS_CORETYPE", "Haswell", ("avx2", "fma")


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


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
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
    if not text.isdigit() or int(text) < 1:
        raise DtreproError(f"{name} is {text!r}; it must be a whole number of CPUs, at least 1 (or unset).")
    return int(text)


def usable_cpus() -> int:
    """The CPUs this process may use: DTREPRO_CPUS if set, else the smallest of its affinity mask, its cgroup's
    CPU quota and SLURM_CPUS_PER_TASK."""
    machine = os.cpu_count() or 1
    if os.environ.get(CPUS_VAR):
        cpus = _positive(CPUS_VAR, os.environ[CPUS_VAR])
        if cpus > machine:
            raise DtreproError(
                f"{CPUS_VAR} is {cpus}, but this machine has {machine} CPUs: that many threads and workers would "
                f"only take turns. Set it to at most {machine}, or unset it to use what this process may use."
            )
        return cpus
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine]
    limits.append(cgroup_cpu_limit() or limits[0])
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        limits.append(_positive("SLURM_CPUS_PER_TASK", os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, min(limits))


def thread_settings() -> dict[str, str]:
    """The environment OpenMP and OpenBLAS start with: the user's own values kept, the rest chosen here."""
    chosen = {"OMP_NUM_THREADS": str(usable_cpus())}
    if "OMP_WAIT_POLICY" not in os.environ:
        chosen["GOMP_SPINCOUNT"] = SPIN_COUNT
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86 and set(PINNED_NEEDS) <= cpu_flags():
        chosen[BLAS_CORE_VAR] = PINNED_CORE
    return {k: os.environ.get(k) or v for k, v in chosen.items()}


def _cpuinfo(cpuinfo: Path, key: str) -> list[str]:
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith(key)]


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The processor's feature flags as the kernel lists them (empty where it does not)."""
    return {flag for line in _cpuinfo(cpuinfo, "flags") for flag in line.split()}


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The processor's model name as the kernel reports it."""
    return next(iter(_cpuinfo(cpuinfo, "model name")), platform.processor() or "unknown")


def blas_core() -> str:
    """The kernels numpy's OpenBLAS runs in this process ("unknown" for another BLAS)."""
    import numpy  # noqa: F401  (threadpoolctl reports the libraries loaded)

    cores = [lib.get("architecture") for lib in threadpool_info() if lib.get("internal_api") == "openblas"]
    return next(filter(None, cores), "unknown")


def unpinned_kernels() -> str | None:
    """Why numpy runs other kernels than OPENBLAS_CORETYPE asks (numpy loaded before the stage set it), else None."""
    asked, running = os.environ.get(BLAS_CORE_VAR), blas_core()
    if not asked or running == "unknown" or running.lower() == asked.lower():
        return None
    return (
        f"numpy runs OpenBLAS's {running} kernels, not the {asked} kernels {BLAS_CORE_VAR} asks for: numpy was "
        f"loaded before the stage's settings, so a collection here gives other data than the collect stage on "
        f"this machine. Call dtrepro.runtime.stage.setup() before importing numpy (as the stage scripts do), or "
        f"set {BLAS_CORE_VAR} before Python starts."
    )


def numpy_simd() -> str:
    """The widest SIMD extension numpy dispatches its own loops to on this processor (e.g. AVX512_ICL)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        return "unknown"
    found = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    return found[-1] if found else "baseline"
