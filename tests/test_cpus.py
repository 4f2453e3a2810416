"""The CPUs a stage may use, and the thread settings torch starts with (no timing: bench/threads.py times them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dtrepro.cpus import CPUS_VAR, OMP_SPIN_COUNT, cgroup_cpu_limit, thread_settings, torch_threads, usable_cpus
from dtrepro.errors import DtreproError

from helpers import ROOT, one_line

# what a fresh interpreter reports after importing the package, before anything else touches torch
PROBE = (
    "import json, os, dtrepro, torch; from dtrepro.cpus import usable_cpus; "
    "from dtrepro.collect.workers import worker_map; "
    "print(json.dumps({'usable': usable_cpus(), 'torch': torch.get_num_threads(), "
    "'spin': os.environ.get('GOMP_SPINCOUNT'), 'omp': os.environ.get('OMP_NUM_THREADS')}))"
)


def probe(env: dict, cpus: set[int] | None = None) -> dict:
    """The probe in a child process with `env` (the test's own OpenMP variables removed) and an affinity mask."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    clean = {k: v for k, v in clean.items() if k not in (CPUS_VAR, "SLURM_CPUS_PER_TASK")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
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
    seen = probe({}, {first})
    assert seen == {"usable": 1, "torch": 1, "spin": str(OMP_SPIN_COUNT), "omp": "1"}


def test_slurm_cpus_per_task_caps_the_threads():
    """A Slurm task given 1 CPU on a node whose cores torch sees all of."""
    assert probe({"SLURM_CPUS_PER_TASK": "1"})["torch"] == 1


def test_the_explicit_setting_comes_above_all():
    cpus = len(os.sched_getaffinity(0))
    assert probe({CPUS_VAR: "1", "SLURM_CPUS_PER_TASK": str(cpus)})["usable"] == 1
    assert probe({CPUS_VAR: "3", "SLURM_CPUS_PER_TASK": "1"})["usable"] == 3  # even above Slurm's
    user = probe({"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "77"})  # a user's own OpenMP settings are kept
    assert user["torch"] == 1 and user["spin"] == "77" and user["usable"] == cpus


def test_a_wait_policy_of_the_users_own_is_not_overridden_by_a_spin_count(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert "GOMP_SPINCOUNT" not in thread_settings()


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


def test_the_test_suite_runs_with_the_same_choice():
    """conftest.py imports the package before torch: this process has the stages' settings."""
    import torch

    assert (
        torch.get_num_threads() == torch_threads()
        and os.environ["GOMP_SPINCOUNT"] == thread_settings()["GOMP_SPINCOUNT"]
    )
