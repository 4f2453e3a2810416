"""What a failed or tampered run leaves: the earlier experiment kept, a stage's outputs always what its run wrote."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from helpers import COLLECTED, run

pytestmark = pytest.mark.slow
D = COLLECTED


def experiments(repo) -> dict[str, dict]:
    shown = json.loads(run(["dvc", "exp", "show", "--json", "--all-commits"], repo).stdout)
    return {e["name"]: e["revs"][0]["data"] for base in shown for e in (base.get("experiments") or [])}


def test_a_failed_rerun_of_a_named_run_keeps_the_earlier_experiment(copy_done):
    repo = copy_done
    before = experiments(repo)["smoke"]["metrics"]["results/ablations.json"]["data"]
    # offline, D4RL's download cannot succeed: the rerun fails in its source stage
    failed = run([sys.executable, "-m", "dtrepro.cli", "run", "smoke", "-S", "study.datasets=[hopper-medium-v2]"], repo)
    assert failed.returncode != 0
    kept = experiments(repo)
    assert "smoke" in kept and kept["smoke"]["metrics"]["results/ablations.json"]["data"] == before
    assert "smoke-pending" not in run(["dvc", "exp", "list", "--name-only"], repo).stdout.split()


def test_a_foreign_checkpoint_is_replaced_by_what_the_run_wrote(copy_done):
    repo = copy_done
    own = repo / f"models/{D}/k5-seed0/best.pt"
    written = own.read_bytes()
    shutil.copy(repo / f"models/{D}/k1-seed0/best.pt", own)  # the K=1 model in K=5's place
    proc = run(["dvc", "exp", "run"], repo, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert own.read_bytes() == written
    assert json.loads((repo / f"reports/eval/{D}/k5-seed0.json").read_text())["context_len"] == 5
    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo).stdout
