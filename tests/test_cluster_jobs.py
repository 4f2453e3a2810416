"""The cluster path's refusals and failures, each one paragraph: bad indices and names, a failing squeue, a refused
array, a new submission over queued jobs, a job that dies of something unforeseen, a finish of other values.

Slurm's own failures (sbatch refusing the second job, squeue failing while the controller restarts) cannot be
made on demand with the real cluster of tests/test_cluster.py, so these put stand-ins for sbatch, squeue and
scancel first on PATH: small scripts that answer as Slurm does and record how they were called.
"""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
import yaml

from dtrepro.pipeline.cluster import jobs, slurm
from dtrepro.pipeline.cluster.spec import Resources, job_folder, task_index
from dtrepro.runtime.errors import DtreproError

from helpers import copy_repo, one_line, run


def stand_in(folder, name: str, script: str) -> None:
    """An executable `name` in `folder` running the shell `script`; its calls are appended to folder/calls."""
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{folder}/calls"\n{script}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A folder of stand-ins first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.fixture(scope="module")
def team_repo(tmp_path_factory):
    """A committed copy of the repository with a folder remote, as a submitting workspace is."""
    repo = copy_repo(tmp_path_factory.mktemp("submit"))
    for cmd in (["dvc", "remote", "add", "-d", "team", str(repo.parent / "remote")], ["git", "commit", "-qam", "r"]):
        assert run(cmd, repo).returncode == 0
    return repo


def test_a_task_index_that_names_no_model_is_one_paragraph(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "abc")
    with pytest.raises(DtreproError, match="SLURM_ARRAY_TASK_ID is 'abc', which names no model of this submission"):
        task_index(None, 4)
    with pytest.raises(DtreproError, match="--index is 7, which names no model of this submission: its models are 0"):
        task_index(7, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert task_index(None, 4) == 2 and task_index(3, 4) == 3


def test_a_submission_name_that_leads_out_of_the_jobs_folder_is_refused(tmp_path):
    with pytest.raises(DtreproError, match="'../../etc' is not a named run's name"):
        job_folder(tmp_path, "../../etc")
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", "cluster", "status", "../x"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'../x' is not a named run's name" in one_line(proc.stderr)


def test_a_parallel_limit_of_zero_is_refused_not_unlimited(tmp_path):
    proc = run(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "cluster", "submit", "smoke", "--max-parallel", "0"], tmp_path
    )
    assert proc.returncode == 2 and "'0' is not a whole number of at least 1" in proc.stderr


def test_a_percent_in_the_workspace_path_reaches_sbatch_as_a_literal(tmp_path):
    assert slurm.pattern_path(tmp_path / "100%" / "jobs") == f"{tmp_path}/100%%/jobs"


def test_a_refused_array_cancels_the_prep_job_and_says_so(team_repo, fake_slurm):
    stand_in(fake_slurm, "sbatch", 'case "$*" in *prep*) echo 101;; *) echo "invalid partition" >&2; exit 1;; esac')
    stand_in(fake_slurm, "scancel", "")
    with pytest.raises(DtreproError) as err:
        slurm.submit(team_repo, "smoke", [], Resources(partition="nope"))
    assert "sbatch refused the job (invalid partition)" in str(err.value)
    assert "The jobs submitted before it (101) were cancelled." in str(err.value)
    assert "scancel 101" in (fake_slurm / "calls").read_text()


def test_a_new_submission_waits_for_the_queued_jobs_of_the_last(team_repo, fake_slurm):
    spec = slurm.plan(team_repo, "smoke", [], Resources())
    (spec.folder / "jobs.json").write_text(json.dumps({"prep": "7", "array": "8", "finish": "9"}))
    stand_in(fake_slurm, "squeue", "echo 8_1; echo 9")
    with pytest.raises(DtreproError, match=r"still queued or running \(8_1, 9\)"):
        slurm.plan(team_repo, "smoke", [], Resources())
    stand_in(fake_slurm, "squeue", "")  # all ended: a new plan is fine
    slurm.plan(team_repo, "smoke", [], Resources())
    (spec.folder / "jobs.json").unlink()


def test_a_failing_squeue_is_asked_again_not_taken_for_ended_jobs(fake_slurm, tmp_path):
    count = tmp_path / "n"
    # fails three times (the controller restarting), then holds the jobs for two polls, then none
    stand_in(
        fake_slurm,
        "squeue",
        f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; "
        '[ "$n" -lt 3 ] && { echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1; }; '
        '[ "$n" -lt 5 ] && echo 8_0; exit 0',
    )
    slurm.wait({"prep": "7", "array": "8"}, poll_s=0.01)
    assert int(count.read_text()) == 6  # it waited for the jobs through the failures
    stand_in(fake_slurm, "squeue", "exit 1")
    with pytest.raises(DtreproError, match=r"squeue has failed for 0 s, so whether the jobs \(7, 8\) still run"):
        slurm.wait({"prep": "7", "array": "8"}, poll_s=0.01, patience_s=0.1)


def test_a_job_that_dies_of_anything_records_its_status(team_repo, monkeypatch):
    spec = slurm.plan(team_repo, "smoke", [], Resources())

    def broken(*args, **kwargs):
        raise RuntimeError("the node lost its scratch disk")

    monkeypatch.setattr(jobs, "Worktree", broken)
    with pytest.raises(DtreproError, match="The task-1 job of smoke failed: RuntimeError: the node lost its scratch"):
        jobs.task(spec.folder, 1)
    status = json.loads((spec.folder / "status" / "task-1.json").read_text())
    assert status["exit"] == 1 and status["error"] == "RuntimeError: the node lost its scratch disk"
    ok, text = slurm.report(spec.folder)
    assert not ok and "task-1: " in text and "failed with exit 1" in text


def test_finish_refuses_values_other_than_those_submitted(team_repo):
    """A commit after submitting changed a value the named run resolves: the finish job would run the report (and
    every evaluate stage) of values no task ran."""
    spec = slurm.plan(team_repo, "smoke", [], Resources())
    values = yaml.safe_load((team_repo / "params.yaml").read_text())
    edited = {**values, "eval": {**values["eval"], "seed": 7}}  # a key the smoke profile leaves as it is
    (team_repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    assert run(["git", "commit", "-qam", "another eval seed"], team_repo).returncode == 0
    try:
        with pytest.raises(
            DtreproError, match="now makes other values for the named run smoke than were submitted"
        ) as e:
            jobs.finish(spec.folder)
    finally:
        assert run(["git", "reset", "-q", "--hard", "HEAD~1"], team_repo).returncode == 0
    assert "eval.seed is 7, the tasks ran 1000" in one_line(str(e.value))
    assert json.loads((spec.folder / "status" / "finish.json").read_text())["exit"] == 1
