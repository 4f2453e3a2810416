"""`dvc repro` for real, in a temporary copy of the repository."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dtrepro.collect.rollout import rollout
from dtrepro.data.d4rl import write_d4rl

from helpers import ROOT, copy_repo, one_line, run

pytestmark = pytest.mark.slow
RUNS = [f"{k}-{s}" for k in (5, 1) for s in (0, 1)]


def named(repo, name, *assignments, check=True):
    proc = run([sys.executable, "-m", "dtrepro.profiles", "run", name, *assignments], repo, timeout=900)
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc


def dvc(repo, *args, check=True):
    proc = run(["dvc", *args], repo, timeout=900)
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def up_to_date(repo) -> bool:
    return "Data and pipelines are up to date." in dvc(repo, "status").stdout


def commit_all(repo, message):
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", message]):
        assert run(cmd, repo).returncode == 0


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    """One named smoke run in a copy of the repository, shared by the tests below."""
    repo = copy_repo(tmp_path_factory.mktemp("smoke"))
    return repo, named(repo, "smoke").stdout


def test_the_named_smoke_run_is_a_dvc_experiment_of_the_whole_pipeline_offline(smoke_repo):
    repo, out = smoke_repo
    runs = RUNS
    assert stages_run(out) == {"study", "source", "repair", "report"} | {
        f"{st}@{r}" for st in ("train", "evaluate") for r in runs
    }
    assert "Ran experiment(s): smoke" in out
    # DVC's view is the workspace's: nothing to run, params.yaml holds the values dvc.lock records
    assert up_to_date(repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["study"]["seeds"] == [0, 1]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["train@5-0"]["params"]["params.yaml"]["model"]["embed_dim"] == 32
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    smoke = [e for base in shown for e in (base.get("experiments") or []) if e["name"] == "smoke"]
    assert len(smoke) == 1
    data = smoke[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["embed_dim"] == 32
    assert "k5.last.target_3600.normalized_score_mean" in data["metrics"]["results/ablations.json"]["data"]
    assert "> python stages/collect.py" in out
    source = json.loads((repo / "reports" / "source.json").read_text())
    repair = json.loads((repo / "reports" / "repair.json").read_text())
    assert source["source"] == "collect" and source["rows"] == repair["rows"]
    assert repair["episodes"] == source["dataset_episodes"] and repair["rows_changed_timeouts_added"] == 0
    assert json.loads((repo / "models" / "behaviour.json").read_text())["weights"]
    for r in runs:
        k, s = r.split("-")
        assert (repo / f"models/k{k}-seed{s}/last.pt").exists() and (repo / f"models/k{k}-seed{s}/best.pt").exists()
        evaluation = json.loads((repo / f"reports/eval/k{k}-seed{s}.json").read_text())
        assert evaluation["context_len"] == int(k) and evaluation["train_seed"] == int(s)
    table = (repo / "results" / "ablations.md").read_text()
    for heading in (
        "## Headline: K = 5, target 3600",
        "## Return conditioning",
        "## Context length",
        "## Per training",
    ):
        assert heading in table
    metrics = json.loads((repo / "results" / "ablations.json").read_text())
    assert {"k5.last.target_3600.normalized_score_mean", "k1.best.target_400.normalized_score_ci95_low"} <= set(metrics)
    per_seed = []  # the report's across-seed numbers, recomputed from the episode rows
    for seed in (0, 1):
        with open(repo / f"reports/eval/k5-seed{seed}.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["checkpoint"] == "last" and float(r["target"]) == 3600]
        per_seed.append(np.mean([float(r["normalized_score"]) for r in rows]))
    assert metrics["k5.last.target_3600.normalized_score_mean"] == pytest.approx(np.mean(per_seed))
    assert metrics["k5.last.target_3600.normalized_score_std_seeds"] == pytest.approx(np.std(per_seed))
    assert f"{np.mean(per_seed):.1f} ± {np.std(per_seed):.1f}" in table
    for png in ("return_conditioning", "context_length", "learning_curves"):
        assert (repo / "results" / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert "report: tables results/ablations.md" in out


def test_an_eval_change_reruns_only_evaluation_and_metrics_diff_shows_it(smoke_repo):
    """A researcher's loop after a named run: commit it, change an eval param with DVC, diff the metrics."""
    repo, _ = smoke_repo
    commit_all(repo, "smoke run")
    changed = dvc(repo, "exp", "run", "-S", "eval.seed=2000")
    assert stages_run(changed.stdout) == {f"evaluate@{r}" for r in RUNS} | {"report"}
    assert stages_run(dvc(repo, "exp", "run", "-S", "eval.seed=2000").stdout) == set()
    assert up_to_date(repo)

    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    score = diff["reports/eval/k5-seed0.json"]["last.target_3600.return_mean"]
    assert score["old"] != score["new"] and score["diff"] == pytest.approx(score["new"] - score["old"])
    assert "k5.last.target_3600.normalized_score_mean" in diff["results/ablations.json"]
    assert diff["reports/eval/k5-seed0.json"]["seed"] == {"old": 1000, "new": 2000, "diff": 1000}
    assert "last.target_3600.normalized_score_mean" in dvc(repo, "metrics", "diff").stdout


def test_an_edit_to_the_train_stage_reruns_every_train_stage_cleanly(smoke_repo):
    """A finished train stage runs again (code edit, -f): from its complete last.pt, all outputs written."""
    repo, _ = smoke_repo
    before = {r: (repo / f"reports/train/k{r.replace('-', '-seed')}.tsv").read_text() for r in RUNS}
    with open(repo / "stages" / "train.py", "a") as f:
        f.write("# an edit\n")
    edited = dvc(repo, "exp", "run")
    assert {f"train@{r}" for r in RUNS} <= stages_run(edited.stdout)
    assert edited.stdout.count("resuming from") == len(RUNS)
    for r in RUNS:
        assert (repo / f"reports/train/k{r.replace('-', '-seed')}.tsv").read_text() == before[r]
    forced = dvc(repo, "exp", "run", "-f", "train@5-0")
    assert "Running stage 'train@5-0'" in forced.stdout
    assert up_to_date(repo)


def test_two_named_runs_at_once_the_second_is_refused(smoke_repo):
    repo, _ = smoke_repo
    first = subprocess.Popen(
        [sys.executable, "-m", "dtrepro.profiles", "run", "smoke", "-S", "eval.seed=3000"],
        cwd=repo,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock = repo / ".dvc" / "tmp" / "named-run.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and "PID" in lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = named(repo, "smoke", "-S", "eval.seed=4000", check=False)
    out, _ = first.communicate(timeout=900)
    assert second.returncode == 2 and "Another named run is running" in one_line(second.stderr)
    assert first.returncode == 0, out
    assert yaml.safe_load((repo / "params.yaml").read_text())["eval"]["seed"] == 3000
    lock_file = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock_file["evaluate@5-0"]["params"]["params.yaml"]["eval.seed"] == 3000
    assert up_to_date(repo)


def test_matrix_items_never_reach_the_shell(repo_copy, tmp_path):
    pwned = tmp_path / "pwned"
    proc = dvc(repo_copy, "exp", "run", "-S", f"study.context_lens=['5; touch {pwned} #']", check=False)
    assert proc.returncode != 0
    assert "study.context_lens.0 is '5; touch" in one_line(proc.stdout + proc.stderr)
    assert not pwned.exists()


def test_the_queue_recipe_runs_offline_on_a_named_run(smoke_repo):
    repo, _ = smoke_repo
    commit_all(repo, "before the queue")
    dvc(repo, "exp", "run", "--queue", "-S", "eval.seed=5000,6000")
    dvc(repo, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    seeds = [
        e["revs"][0]["data"]["params"]["params.yaml"]["data"]["eval"]["seed"]
        for base in shown
        for e in (base.get("experiments") or [])
    ]
    assert {5000, 6000} <= set(seeds)


def test_download_source_runs_download_and_repair_and_caches(repo_copy, hopper_file, hopper):
    """A file of one's own through the download source: its hash check turned off, and the metrics say so."""
    sets = ["-S", "data.source=download", "-S", f"data.url={hopper_file}", "-S", "data.check_sha256=false"]
    out = named(repo_copy, "smoke", *sets).stdout  # the whole pipeline on it, with the smoke profile's sizes
    assert "> python stages/download.py" in out and "Running stage 'repair'" in out
    source = json.loads((repo_copy / "reports" / "source.json").read_text())
    assert source["sha256_checked"] is False and source["dataset"] == "hopper-medium-v2"
    report = json.loads((repo_copy / "reports" / "repair.json").read_text())
    assert report["episodes"] == int((hopper[1] | hopper[2]).sum())
    assert (repo_copy / "data" / "raw.hdf5").read_bytes() == hopper_file.read_bytes()

    assert stages_run(named(repo_copy, "smoke", *sets).stdout) == set()  # nothing changed, nothing runs
    changed = dvc(repo_copy, "exp", "run", "-S", "repair.max_episode_steps=500", "repair").stdout
    assert stages_run(changed) == {"repair"}
    assert json.loads((repo_copy / "reports" / "repair.json").read_text())["boundaries_time_limit"] > 0
    assert "boundaries_time_limit" in dvc(repo_copy, "metrics", "show", "--json").stdout


def test_every_dep_exists_or_is_made_by_a_stage():
    text = (ROOT / "dvc.yaml").read_text().replace("${item.context_len}", "<K>").replace("${item.seed}", "<S>")
    stages = yaml.safe_load(text)["stages"]
    produced = {
        o if isinstance(o, str) else next(iter(o))
        for s in stages.values()
        for key in ("outs", "metrics", "plots")
        for o in s.get(key, [])
    }
    for stage in stages.values():
        for dep in set(stage["deps"]) - produced:
            made_by_others = any(p.startswith(dep + "/") for p in produced)  # a folder of other stages' outputs
            assert "${" in dep or made_by_others or (ROOT / dep).exists(), dep


def test_a_dataset_name_alone_picks_its_env_targets_and_references(repo_copy, tmp_path):
    """A walker2d file (real Walker2d-v4 rollouts, D4RL's v2 layout, the last episode cut unflagged), with only
    data.dataset naming it: trained and evaluated on Walker2d-v4 at the paper's Walker2d targets."""
    rng = np.random.default_rng(0)
    data = rollout("Walker2d-v4", lambda obs: rng.uniform(-1, 1, 6), 3000, seed=0, flag_last=False)
    raw = tmp_path / "walker2d_medium_replay-v2.hdf5"
    write_d4rl(raw, data)
    sets = ["data.source=download", "data.dataset=walker2d-medium-replay-v2", f"data.url={raw}"]
    sets += ["data.check_sha256=false", "eval.targets=null"]  # the smoke profile's targets are Hopper's
    named(repo_copy, "smoke", *(x for s in sets for x in ("-S", s)))
    evaluation = json.loads((repo_copy / "reports/eval/k5-seed0.json").read_text())
    assert evaluation["env_id"] == "Walker2d-v4"
    assert {"last.target_5000.return_mean", "last.target_2500.return_mean", "last.target_556.return_mean"} <= set(
        evaluation
    )
    repair = json.loads((repo_copy / "reports/repair.json").read_text())
    assert repair["rows"] == 3000 and repair["trailing_episode_cut"]
    table = " ".join((repo_copy / "results/ablations.md").read_text().split())
    assert (
        "walker2d-medium-replay-v2: Decision Transformer paper (Chen et al., 2021, Table 2, 3 seeds) 66.6 ± 3.0"
        in table
    )
    assert "Walker2d-v4" in table and up_to_date(repo_copy)
