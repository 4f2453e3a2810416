"""The processor's facts that numbers depend on, and numpy's BLAS kernels fixed across x86-64 processors.

OpenBLAS, numpy's BLAS, picks its kernels by processor when numpy loads it: SkylakeX's on a processor
with AVX-512, Haswell's (or Zen's, the same arithmetic) on one with AVX2 alone. They round the last bit
of a matrix product differently, and ARS amplifies that into another search and other data: the demo's
collection with collect.seed 0 reached its first band after 109,828 steps with SkylakeX's kernels and
after 84,789 with Haswell's, on one machine (OPENBLAS_CORETYPE chose them), and the same counts came on
two machines whose processors differ. numpy's own SIMD loops do not matter here (disabling every AVX-512
one through NPY_DISABLE_CPU_FEATURES left the search unchanged). So `pin_blas_kernels`, run when the
`dtrepro` package is imported, before numpy loads, sets OPENBLAS_CORETYPE=Haswell where the processor
has AVX2 and FMA: kernels that every x86-64 processor of the last decade runs, so that a collection
gives the same bytes on all of them. A value of the user's own is left as it is; on other processors
(ARM, or a build whose BLAS is not OpenBLAS) the kernels are the library's choice, and `blas_core` says
which ran.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BLAS_CORE_VAR = "OPENBLAS_CORETYPE"
PINNED_CORE = "Haswell"
PINNED_NEEDS = ("avx2", "fma")  # the instructions Haswell's kernels use


def _cpuinfo_lines(cpuinfo: Path) -> list[str]:
    try:
        return cpuinfo.read_text().splitlines()
    except OSError:
        return []


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The processor's feature flags as the kernel lists them (empty where it does not)."""
    return {
        word for line in _cpuinfo_lines(cpuinfo) if line.startswith("flags") for word in line.split(":", 1)[-1].split()
    }


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The processor's model name as the kernel reports it ("unknown" where it does not)."""
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo_lines(cpuinfo) if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def pin_blas_kernels(cpuinfo: Path = CPUINFO) -> None:
    """OPENBLAS_CORETYPE=Haswell where it is not set and this x86-64 processor runs those kernels."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if BLAS_CORE_VAR not in os.environ and x86 and set(PINNED_NEEDS) <= cpu_flags(cpuinfo):
        os.environ[BLAS_CORE_VAR] = PINNED_CORE


def blas_core() -> str:
    """The kernels numpy's bundled OpenBLAS runs in this process ("unknown" for another BLAS)."""
    numpy = sys.modules.get("numpy") or __import__("numpy")
    for path in glob.glob(str(Path(numpy.__file__).parent.with_name("numpy.libs") / "libscipy_openblas*")):
        lib = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            if hasattr(lib, symbol):
                getter = getattr(lib, symbol)
                getter.restype = ctypes.c_char_p
                return getter().decode()
    return "unknown"


def unpinned_kernels() -> str | None:
    """Why numpy runs other kernels than OPENBLAS_CORETYPE asks (numpy loaded before `dtrepro`), else None."""
    asked, running = os.environ.get(BLAS_CORE_VAR), blas_core()
    if not asked or running == "unknown" or running.lower() == asked.lower():
        return None
    return (
        f"numpy runs OpenBLAS's {running} kernels, not the {asked} kernels {BLAS_CORE_VAR} asks for: numpy was "
        f"loaded before dtrepro, so a collection here gives other data than the collect stage on this machine "
        f"(the source metrics' blas_core says which ran). Import dtrepro before numpy (or anything that loads it), "
        f"or set {BLAS_CORE_VAR} before Python starts."
    )


def numpy_simd() -> str:
    """The widest SIMD extension numpy dispatches its own loops to on this processor (e.g. AVX512_ICL)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        return "unknown"
    found = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    return found[-1] if found else "baseline"
