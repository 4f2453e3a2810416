"""What made a collected dataset besides its params: the processor, the numeric kernels, the libraries.

MuJoCo and ARS are deterministic on one machine and build: the same seed gives the same bytes, whatever
the load or the number of worker processes. Across processors they need not be (`dtrepro.runtime.threads`), nor
across library versions. The source metrics record these beside the data's SHA-256, and the report
prints them, so that two users whose numbers differ can see at once whether their data do.
"""

from __future__ import annotations

import importlib.metadata
import os

from dtrepro.runtime.threads import blas_core, cpu_model, numpy_simd

LIBRARIES = ("gymnasium", "mujoco", "numpy", "h5py")


def versions() -> dict[str, str]:
    """The versions of the libraries a collection's numbers depend on (`version/<package>`)."""
    return {f"version/{p}": importlib.metadata.version(p) for p in LIBRARIES}


def provenance(workers: int) -> dict:
    """The machine facts of a collection: processor, its numeric kernels, library versions, worker processes."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "blas_core": blas_core(),
        "numpy_simd": numpy_simd(),
        **versions(),
        "workers": workers,
    }
