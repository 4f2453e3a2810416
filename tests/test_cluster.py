"""The study on a real Slurm cluster of one node on localhost (support.local_slurm): prep, an array, the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from helpers import COLLECTED, copy_repo, one_line, run
from support.local_slurm import LocalSlurm, installed

pytestmark = pytest.mark.slow
D = COLLECTED
RUNS = [f"{D}-{k}-{s}" for k in (5, 1) for s in (0, 1)]  # the smoke study's models, in the array's order
JOBS = ".dvc/tmp/cluster/smoke"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if not installed():
        if os.environ.get("DTREPRO_REQUIRE_SLURM"):
            pytest.fail("DTREPRO_REQUIRE_SLURM is set but slurm-wlm and munge are not installed")
        pytest.skip("Debian's slurm-wlm and munge are not installed (.ci/run installs them)")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    env = cluster.__enter__()
    try:
        yield {"SLURM_CONF": env["SLURM_CONF"]}
    finally:
        cluster.__exit__()
    for pid in cluster.pids:  # every daemon stopped by its PID
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def with_remote(repo, remote):
    for cmd in (["dvc", "remote", "add", "-d", "team", str(remote)], ["git", "commit", "-q", "-am", "remote"]):
        proc = run(cmd, repo)
        assert proc.returncode == 0, proc.stderr
    return repo


def cluster(repo, env, *args, check=True):
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", "cluster", *args], repo, env=env, timeout=1500)
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc


def status(repo, job):
    return json.loads((repo / JOBS / "status" / f"{job}.json").read_text())


def results(repo):
    return json.loads((repo / "results" / "ablations.json").read_text())


def test_the_smoke_study_on_slurm_gives_the_single_machine_report(slurm, smoke_done, tmp_path):
    repo = with_remote(copy_repo(tmp_path), tmp_path / "remote")
    submitted = cluster(repo, slurm, "submit", "smoke", "--wait")
    assert "every job of smoke ended well" in submitted.stdout
    tasks = [status(repo, f"task-{i}") for i in range(len(RUNS))]
    for task, name in zip(tasks, RUNS, strict=True):
        assert task["model"] == f"train@{name}" and set(task["ran"]) == {f"train@{name}", f"evaluate@{name}"}
    assert set(status(repo, "prep")["ran"]) == {"study", f"source@{D}", f"repair@{D}"}
    overlap = [(a, b) for a in tasks for b in tasks if a is not b and a["started"] < b["ended"] < a["ended"]]
    assert overlap, "the array's tasks ran one at a time"
    finish = status(repo, "finish")
    assert not {r for r in finish["ran"] if r.startswith(("train@", "evaluate@"))}
    assert {f"train@{r}" for r in RUNS} <= set(finish["restored"])
    assert results(repo) == results(smoke_done.repo)
    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo).stdout
    assert "smoke" in run(["dvc", "exp", "list", "--name-only"], repo).stdout.split()


def queued(env):
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], env={**os.environ, **env}, capture_output=True)
    return out.stdout.split()


def test_a_cancelled_task_is_named_and_resubmitting_runs_only_it(slurm, copy_done, tmp_path):
    repo = with_remote(copy_done, tmp_path / "remote")
    assignments = ["-S", "train.steps=25"]
    cluster(repo, slurm, "submit", "smoke", *assignments)
    ids = json.loads((repo / JOBS / "jobs.json").read_text())
    cancelled = subprocess.run(["scancel", f"{ids['array']}_3"], env={**os.environ, **slurm})
    assert cancelled.returncode == 0
    deadline = time.monotonic() + 900
    while queued(slurm) and time.monotonic() < deadline:
        time.sleep(1)
    told = cluster(repo, slurm, "status", "smoke", check=False)
    assert told.returncode == 1
    text = one_line(told.stdout)
    assert f"task-3: train@{RUNS[3]} and evaluate@{RUNS[3]} did not end" in text
    assert "finish: the named run smoke (report, suite) did not end" in text
    assert "task-0" not in text and "prep" not in text

    again = cluster(repo, slurm, "submit", "smoke", *assignments, "--wait")
    assert "every job of smoke ended well" in again.stdout
    assert set(status(repo, "task-3")["ran"]) == {f"train@{RUNS[3]}", f"evaluate@{RUNS[3]}"}
    for i in range(3):
        assert status(repo, f"task-{i}")["ran"] == [] and f"train@{RUNS[i]}" in status(repo, f"task-{i}")["restored"]
    assert set(status(repo, "prep")["ran"]) <= {"study"}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {lock[f"train@{r}"]["params"]["params.yaml"]["train"]["steps"] for r in RUNS} == {25}
    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo).stdout
