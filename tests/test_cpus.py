"""The CPUs a stage may use, and the thread settings torch starts with (no timing: bench/threads.py times them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dtrepro.cpus import (
    CPUS_VAR,
    OURS_VAR,
    Governor,
    busy_ticks,
    cgroup_cpu_limit,
    thread_settings,
    threads_for,
    torch_threads,
    usable_cpus,
)
from dtrepro.errors import DtreproError

from helpers import ROOT, one_line

# what a fresh interpreter reports after importing the package, before anything else touches torch
PROBE = (
    "import json, os, dtrepro, torch; from dtrepro.cpus import usable_cpus; "
    "from dtrepro.collect.workers import worker_map; "
    "print(json.dumps({'usable': usable_cpus(), 'torch': torch.get_num_threads(), "
    "'spin': os.environ.get('GOMP_SPINCOUNT'), 'omp': os.environ.get('OMP_NUM_THREADS'), "
    f"'ours': os.environ.get('{OURS_VAR}')}}))"
)


def probe(env: dict, cpus: set[int] | None = None) -> dict:
    """The probe in a child process with `env` (the test's own OpenMP variables removed) and an affinity mask."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    clean = {k: v for k, v in clean.items() if k not in (CPUS_VAR, "SLURM_CPUS_PER_TASK", OURS_VAR)}
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
    assert seen == {"usable": 1, "torch": 1, "spin": None, "omp": "1", "ours": "OMP_NUM_THREADS"}


def test_slurm_cpus_per_task_caps_the_threads():
    """A Slurm task given 1 CPU on a node whose cores torch sees all of."""
    assert probe({"SLURM_CPUS_PER_TASK": "1"})["torch"] == 1


def test_the_explicit_setting_comes_above_all():
    cpus = len(os.sched_getaffinity(0))
    assert probe({CPUS_VAR: "1", "SLURM_CPUS_PER_TASK": str(cpus)})["usable"] == 1
    machine = os.cpu_count()
    assert probe({CPUS_VAR: str(machine), "SLURM_CPUS_PER_TASK": "1"})["usable"] == machine  # even above Slurm's
    user = probe({"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "77"})  # a user's own OpenMP settings are kept
    assert user["torch"] == 1 and user["spin"] == "77" and user["usable"] == cpus and user["ours"] is None


def test_a_thread_count_of_the_users_own_is_not_governed(monkeypatch):
    """OMP_NUM_THREADS set by the user stays fixed; the one the project set (inherited by a stage's children)
    follows the load."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv(OURS_VAR, raising=False)
    assert thread_settings() == {"OMP_NUM_THREADS": "2"} and not Governor().active
    monkeypatch.setenv(OURS_VAR, "OMP_NUM_THREADS")
    assert thread_settings() == {"OMP_NUM_THREADS": str(usable_cpus()), OURS_VAR: "OMP_NUM_THREADS"}


@pytest.mark.parametrize(
    "free, current, expected",
    [(2.0, 2, 2), (1.6, 2, 2), (1.4, 2, 1), (0.2, 2, 1), (1.0, 1, 1), (1.7, 1, 1), (1.85, 1, 2), (3.9, 2, 2)],
)
def test_the_thread_count_drops_when_half_a_cpu_is_taken_and_rises_when_it_is_free(free, current, expected):
    assert threads_for(free, current, cpus=2) == expected


def fake_stat(path, busy_per_cpu: list[int]) -> None:
    """A /proc/stat whose CPUs have been busy `busy_per_cpu` ticks (as user time, and as steal on cpu1)."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for n, busy in enumerate(busy_per_cpu):
        user, steal = (busy, 0) if n != 1 else (busy // 2, busy - busy // 2)
        lines.append(f"cpu{n} {user} 0 0 999 0 0 0 {steal} 0 0")
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n")


def test_busy_time_counts_the_allowed_cpus_and_the_host_s_steal(tmp_path):
    fake_stat(tmp_path / "stat", [10, 21, 400])
    assert busy_ticks({0, 1}, tmp_path / "stat") == 31 and busy_ticks({2}, tmp_path / "stat") == 400
    assert busy_ticks({0}, tmp_path / "missing") is None


def test_the_governor_follows_others_use_of_the_cpus(tmp_path, monkeypatch):
    """A /proc/stat and a clock of the test's own: a CPU busy with someone else takes torch to one thread, and
    its release back to two."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv(OURS_VAR, "OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    clock, hz, stat = [0.0], os.sysconf("SC_CLK_TCK"), tmp_path / "stat"
    fake_stat(stat, [0, 0])
    before = torch.get_num_threads()
    try:
        governor = Governor(stat, clock=lambda: clock[0])
        assert governor.active and governor.tick() == 2
        for seconds, busy, threads in [(0.2, 0, 2), (1.0, hz, 1), (2.0, hz, 2), (3.0, int(1.3 * hz), 2)]:
            clock[0] = seconds
            fake_stat(stat, [busy, 0])  # cpu0: someone else's (this test's own CPU time is next to nothing)
            assert governor.tick() == threads == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_real_busy_process_takes_a_thread_away():
    """The real /proc/stat: beside a process that keeps a CPU busy, torch is left the CPUs that are free."""
    import time

    import torch

    before = torch.get_num_threads()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        governor = Governor()
        if not governor.active:
            pytest.skip("the project's thread count is not in force here")
        time.sleep(1.0)
        assert governor.tick() <= governor.cpus - 1
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(before)


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

    assert torch.get_num_threads() == torch_threads() and os.environ.get(OURS_VAR) == "OMP_NUM_THREADS"
