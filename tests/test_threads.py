"""The CPUs a stage may use, the thread and BLAS settings it starts with, and the processor facts it records
(no timing: bench/threads.py times them)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from dtrepro.runtime import threads
from dtrepro.runtime.errors import DtreproError
from dtrepro.runtime.threads import BLAS_CORE_VAR, CPUS_VAR, cgroup_cpu_limit, cpu_model, usable_cpus

from helpers import ROOT, one_line

SETTINGS = ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", BLAS_CORE_VAR, CPUS_VAR, "SLURM_CPUS_PER_TASK")
# what a fresh interpreter reports once a stage's setup has run (TORCH: and the threads torch then starts with)
PROBE = (
    "import json, os; from dtrepro.runtime.stage import setup; setup(); "
    "print(json.dumps({'usable': int(os.environ['OMP_NUM_THREADS']), 'spin': os.environ.get('GOMP_SPINCOUNT')}))"
)
TORCH = PROBE.replace("setup(); ", "setup(); import torch; ")
TORCH = TORCH.replace("{'usable'", "{'torch': torch.get_num_threads(), 'usable'")
# what importing the library (and running it) changes in the process: nothing
IMPORT = (
    "import json, os, signal, sys; before = dict(os.environ); import dtrepro.training.loop, dtrepro.pipeline.cli; "
    "print(json.dumps([dict(os.environ) == before, signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
    "sys.excepthook is sys.__excepthook__]))"
)
x86_with_avx2 = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= threads.cpu_flags()


def probe(env: dict, cpus: set[int] | None = None, code: str = PROBE):
    """`code` in a child process with `env` (the test's own settings removed) and an affinity mask."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_an_affinity_mask_of_one_cpu_gives_one_thread():
    """A stage pinned to one CPU (taskset, a container's cpuset) must not start a thread per core of the machine."""
    first = min(os.sched_getaffinity(0))
    assert probe({}, {first}, TORCH) == {"usable": 1, "torch": 1, "spin": "1000"}


def test_importing_the_library_changes_nothing_in_the_process():
    """The environment, SIGINT's handler and the excepthook stay as they were: only a stage's setup sets them."""
    assert probe({}, code=IMPORT) == [True, True, True]


def test_slurm_cpus_per_task_caps_the_threads():
    """A Slurm task given 1 CPU on a node whose cores torch sees all of."""
    assert probe({"SLURM_CPUS_PER_TASK": "1"})["usable"] == 1


def test_the_explicit_setting_comes_above_all_and_a_users_openmp_settings_stay():
    cpus = len(os.sched_getaffinity(0))
    assert probe({CPUS_VAR: "1", "SLURM_CPUS_PER_TASK": str(cpus)})["usable"] == 1
    machine = os.cpu_count()
    assert probe({CPUS_VAR: str(machine), "SLURM_CPUS_PER_TASK": "1"})["usable"] == machine  # even above Slurm's
    user = probe({"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "77"}, code=TORCH)
    assert user["torch"] == 1 and user["spin"] == "77"
    assert probe({"OMP_WAIT_POLICY": "PASSIVE"})["spin"] is None  # a wait policy of the user's: no spin of ours


BLAS_PROBE = "import json; from dtrepro.runtime.threads import blas_core, unpinned_kernels; "


@pytest.mark.skipif(not x86_with_avx2, reason="Haswell's kernels need an x86-64 processor with AVX2 and FMA")
def test_a_stage_runs_haswell_kernels_and_numpy_loaded_before_its_setup_is_named():
    """The stage's setup pins OpenBLAS's kernels before numpy loads (a user's own choice wins); numpy loaded
    with other kernels before it (a script importing gymnasium first) is named before a collection."""
    pinned = "from dtrepro.runtime.stage import setup; setup(); " + BLAS_PROBE + "print(json.dumps(blas_core()))"
    assert probe({}, code=pinned) == "Haswell"
    assert probe({BLAS_CORE_VAR: "Sandybridge"}, code=pinned) == "Sandybridge"
    late = "import numpy, os; os.environ['OPENBLAS_CORETYPE'] = 'Haswell'; " + BLAS_PROBE
    late += "print(json.dumps([blas_core(), unpinned_kernels()]))"
    running, why = probe({BLAS_CORE_VAR: "Sandybridge"}, code=late)
    assert running == "Sandybridge" and why.startswith("numpy runs OpenBLAS's Sandybridge kernels, not the Haswell")
    assert probe({}, code=pinned.replace("blas_core()", "unpinned_kernels()")) is None


def test_the_processor_facts_come_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 fma\n")
    assert cpu_model(tmp_path / "cpuinfo") == "Some CPU 9000"
    assert threads.cpu_flags(tmp_path / "cpuinfo") == {"fpu", "avx2", "fma"}


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_cpu_count_that_is_none_is_refused(monkeypatch, value):
    monkeypatch.setenv(CPUS_VAR, value)
    with pytest.raises(DtreproError, match=f"{CPUS_VAR} is '{value}'; it must be a whole number of CPUs"):
        usable_cpus()


def test_a_bad_setting_stops_a_stage_with_one_paragraph(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages/train.py"), "--dataset", "hopper-medium-v2", "--context-len", "5"]
        + ["--seed", "0", "--data", str(tmp_path / "x.hdf5"), "--out-dir", str(tmp_path / "m")]
        + ["--log-file", str(tmp_path / "l.tsv"), "--metrics", str(tmp_path / "m.json")],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, CPUS_VAR: "none"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{CPUS_VAR} is 'none'" in one_line(proc.stderr)


V1_JOB = {"cpu/job/cpu.cfs_period_us": "100000\n"}


@pytest.mark.parametrize(
    "layout, expected",
    [
        ({"proc": "0::/job\n", "job/cpu.max": "150000 100000\n"}, 2),  # v2: 1.5 CPUs round up
        ({"proc": "0::/job\n", "job/cpu.max": "max 100000\n"}, None),
        ({"proc": "0::/\n", "cpu.max": "100000 100000\n"}, 1),  # inside a container: the mount's top
        (
            {
                "proc": "2:cpu,cpuacct:/job\n",
                "cpu/job/cpu.cfs_quota_us": "100000\n",
                "cpu/job/cpu.cfs_period_us": "100000\n",
            },
            1,
        ),
        (
            {
                "proc": "2:cpu,cpuacct:/job\n",
                "cpu/job/cpu.cfs_quota_us": "-1\n",
                "cpu/job/cpu.cfs_period_us": "100000\n",
            },
            None,
        ),
        ({"proc": "", "cpu.max": "100000 100000\n"}, None),  # no cgroup known
    ],
)
def test_a_cgroup_cpu_quota_is_read_in_either_cgroup_version(tmp_path, layout, expected):
    root = tmp_path / "cgroup"
    for name, text in layout.items():
        path = tmp_path / "proc_cgroup" if name == "proc" else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert cgroup_cpu_limit(root, tmp_path / "proc_cgroup") == expected
