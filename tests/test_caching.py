"""DVC's run-cache restores every stage whose configuration comes back, here and, through a remote, in another clone."""

from __future__ import annotations

import json
import re
import sys

import pytest

from helpers import COLLECTED, run, stages_ran, stages_restored

pytestmark = pytest.mark.slow
D = COLLECTED
RUNS = [f"{D}-{k}-{s}" for k in (5, 1) for s in (0, 1)]
MODELS = {f"{st}@{r}" for st in ("train", "evaluate") for r in RUNS}


def ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def dvc(repo, *args):
    return ok(run(["dvc", *args], repo, timeout=900))


def dtrepro(repo, *args):
    return ok(run([sys.executable, "-m", "dtrepro.pipeline.cli", *args], repo, timeout=900))


def checkpoints(repo) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted((repo / "models").glob("*/*/*.pt"))}


def results(repo) -> dict:
    return json.loads((repo / "results" / "ablations.json").read_text())


def test_going_back_to_earlier_values_restores_every_model_from_the_run_cache(copy_done):
    repo = copy_done
    first, models = results(repo), checkpoints(repo)
    changed = dvc(repo, "exp", "run", "-S", "train.steps=30")
    assert MODELS <= stages_ran(changed.stdout) and results(repo) != first
    back = dvc(repo, "exp", "run", "-S", "train.steps=20")  # the committed value again
    again = MODELS | {f"render@{D}"}  # the videos too: their model came back
    assert not stages_ran(back.stdout) & again, back.stdout
    assert again <= stages_restored(back.stdout)
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    assert results(repo) == first and checkpoints(repo) == models


def test_a_fresh_clone_pulls_from_a_folder_remote_and_trains_nothing(copy_done, tmp_path):
    a = copy_done
    dvc(a, "remote", "add", "-d", "team", str(tmp_path / "remote"))
    ok(run(["git", "commit", "-q", "-am", "a remote for the team"], a))
    pushed = dtrepro(a, "push")
    assert re.search(r"push: \d+ output files, [1-9]\d* run-cache entries", pushed.stdout), pushed.stdout

    b = tmp_path / "b"
    ok(run(["git", "clone", "-q", str(a), str(b)], tmp_path))
    # the small files git carries too are made again, from what the remote holds
    for folder in ("reports", "results"):
        ok(run(["git", "rm", "-rq", folder], b))
    assert not [*b.glob("models/**/*.pt"), *b.glob("data/**/*.hdf5")]  # git carries none of them
    pulled = dtrepro(b, "pull")
    assert re.search(r"[1-9]\d* objects they name", pulled.stdout) and "found nowhere" not in pulled.stdout
    rerun = dvc(b, "exp", "run")
    assert not stages_ran(rerun.stdout) & (MODELS | {f"source@{D}", f"repair@{D}"}), rerun.stdout
    assert MODELS <= stages_restored(rerun.stdout)
    assert results(b) == results(a) and checkpoints(b) == checkpoints(a)
    assert "Data and pipelines are up to date." in dvc(b, "status").stdout
