"""What a failed or tampered run leaves: the earlier experiment kept, a stage's outputs always what its run wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from dtrepro.pipeline.commands import repo_env

from helpers import COLLECTED, one_line, run

pytestmark = pytest.mark.slow
D = COLLECTED


def experiments(repo) -> dict[str, dict]:
    shown = json.loads(run(["dvc", "exp", "show", "--json", "--all-commits"], repo).stdout)
    return {e["name"]: e["revs"][0]["data"] for base in shown for e in (base.get("experiments") or [])}


def test_a_failed_rerun_of_a_named_run_keeps_the_earlier_experiment(copy_done):
    repo = copy_done
    before = experiments(repo)["smoke"]["metrics"]["results/metrics.json"]["data"]
    # offline, D4RL's download cannot succeed: the rerun fails in its source stage
    failed = run(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "-S", "study.datasets=[hopper-medium-v2]"], repo
    )
    assert failed.returncode != 0
    kept = experiments(repo)
    assert "smoke" in kept and kept["smoke"]["metrics"]["results/metrics.json"]["data"] == before
    assert "smoke-pending" not in run(["dvc", "exp", "list", "--name-only"], repo).stdout.split()
    # the page left in the workspace says whose numbers it shows: the smoke run's, on its own data
    page = (repo / "results" / "index.html").read_text()
    assert "<td>experiment</td><td>smoke</td>" in page and f"<td>datasets</td><td>{D} (SHA-256" in page
    assert "hopper-medium-v2" not in page.split("</table>")[0]


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


def test_params_rewritten_during_a_named_run_stop_it_and_every_stage_records_what_it_ran_with(copy_done):
    """params.yaml rewritten while a named run evaluates (another `dvc exp run -S`, an editor): the stage that saw
    the new values fails before DVC records it, the run stops, and no stage records values it did not run with."""
    repo = copy_done
    cmd = [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "-S", "eval.episodes=5"]
    named = subprocess.Popen(
        cmd, cwd=repo, env=repo_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in named.stdout:
        output.append(line)
        if line.startswith("Running stage 'evaluate@"):
            break
    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["eval"]["episodes"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(values))
    output += named.stdout.readlines()
    assert named.wait(timeout=600) != 0
    text = one_line("".join(output))
    assert "params.yaml changed while the named run 'smoke' was running: eval.episodes was 5 when it started" in text
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for k, seed in ((5, 0), (5, 1), (1, 0), (1, 1)):
        recorded = lock[f"evaluate@{D}-{k}-{seed}"]["params"]["params.yaml"]["eval"]["episodes"]
        assert recorded in (3, 5), (k, seed, recorded)  # the smoke run's, or this run's: never the rewritten 7
        episodes = repo / f"reports/eval/{D}/k{k}-seed{seed}.csv"
        # 2 checkpoints x 2 targets x the episodes its dvc.lock entry says
        assert not episodes.exists() or len(episodes.read_text().splitlines()) - 1 == 2 * 2 * recorded
    assert f"evaluate@{D}-" in run(["dvc", "status"], repo).stdout  # the stage that saw 7: not done
    names = run(["dvc", "exp", "list", "--all-commits", "--name-only"], repo).stdout.split()
    assert "smoke" in names and "smoke-pending" not in names
