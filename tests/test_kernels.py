"""numpy's BLAS kernels pinned to Haswell's on x86-64 processors with AVX2, so collected data do not depend on
the processor; the processor facts the provenance records."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from dtrepro import kernels
from dtrepro.kernels import BLAS_CORE_VAR, cpu_flags, cpu_model, pin_blas_kernels

AVX2 = "flags\t\t: fpu sse2 avx fma avx2 avx512f\n"
NO_AVX2 = "flags\t\t: fpu sse2 avx\n"
x86_with_avx2 = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= cpu_flags()


@pytest.mark.parametrize(
    "cpuinfo, machine, user, expected",
    [
        (AVX2, "x86_64", None, "Haswell"),  # pinned
        (AVX2, "x86_64", "SkylakeX", "SkylakeX"),  # the user's own value stays
        (NO_AVX2, "x86_64", None, None),  # a processor that cannot run Haswell's kernels: the library's choice
        (AVX2, "aarch64", None, None),  # not x86
    ],
)
def test_the_pin_where_the_processor_runs_haswell_kernels(tmp_path, monkeypatch, cpuinfo, machine, user, expected):
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Some CPU 9000\n{cpuinfo}")
    monkeypatch.setattr(kernels.platform, "machine", lambda: machine)
    monkeypatch.delenv(BLAS_CORE_VAR, raising=False)
    if user:
        monkeypatch.setenv(BLAS_CORE_VAR, user)
    pin_blas_kernels(tmp_path / "cpuinfo")
    assert os.environ.get(BLAS_CORE_VAR) == expected
    assert cpu_model(tmp_path / "cpuinfo") == "Some CPU 9000"


def blas_core_of_a_fresh_process(**env) -> str:
    code = "import dtrepro\nfrom dtrepro.kernels import blas_core\nprint(blas_core())"
    clean = {k: v for k, v in os.environ.items() if k != BLAS_CORE_VAR}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.skipif(not x86_with_avx2, reason="Haswell's kernels need an x86-64 processor with AVX2 and FMA")
def test_importing_dtrepro_before_numpy_runs_haswell_kernels_and_a_users_choice_wins():
    assert blas_core_of_a_fresh_process() == "Haswell"
    assert blas_core_of_a_fresh_process(**{BLAS_CORE_VAR: "Sandybridge"}) == "Sandybridge"


@pytest.mark.skipif(not x86_with_avx2, reason="Haswell's kernels need an x86-64 processor with AVX2 and FMA")
def test_numpy_loaded_before_dtrepro_is_named_before_a_collection():
    """Fails if the check misses kernels that differ from the pin (a script importing gymnasium first, as
    bench/collect.py once did, collected other data than the stage without a word)."""
    code = "import numpy\nimport dtrepro\nfrom dtrepro.kernels import blas_core, unpinned_kernels\n"
    code += "print(blas_core())\nprint(unpinned_kernels())"
    clean = {k: v for k, v in os.environ.items() if k != BLAS_CORE_VAR}
    running, why = (
        subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True)
        .stdout.strip()
        .split("\n", 1)
    )
    if running == "Haswell":
        pytest.skip("this processor's own choice is Haswell's kernels: nothing differs")
    assert why.startswith(f"numpy runs OpenBLAS's {running} kernels, not the Haswell kernels")
    assert "Import dtrepro before numpy" in why
    code = "import dtrepro\nfrom dtrepro.kernels import unpinned_kernels\nprint(unpinned_kernels())"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True
        ).stdout.strip()
        == "None"
    )
