"""`dvc repro` for real, in a temporary copy of the repository."""

from __future__ import annotations

import csv
import json
import re
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, copy_repo, run

pytestmark = pytest.mark.slow


def repro(repo, *extra, target=None):
    cmd = [sys.executable, "-m", "dtrepro.profiles", "run", "smoke", *extra, "--", "dvc", "repro"]
    proc = run(cmd + ([target] if target else []), repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    """One `dvc repro` of the smoke profile in a copy of the repository, shared by the tests below."""
    repo = copy_repo(tmp_path_factory.mktemp("smoke"))
    return repo, repro(repo)


def test_smoke_profile_runs_the_whole_pipeline_offline(smoke_repo):
    repo, out = smoke_repo
    runs = [f"{k}-{s}" for k in (5, 1) for s in (0, 1)]
    assert stages_run(out) == {"source", "repair", "report"} | {
        f"{st}@{r}" for st in ("train", "evaluate") for r in runs
    }
    assert "> python stages/collect.py" in out
    source = json.loads((repo / "reports" / "source.json").read_text())
    repair = json.loads((repo / "reports" / "repair.json").read_text())
    assert source["source"] == "collect" and source["rows"] == repair["rows"]
    assert repair["episodes"] == source["dataset_episodes"] and repair["rows_changed_timeouts_added"] == 0
    assert json.loads((repo / "models" / "behaviour.json").read_text())["weights"]
    assert (repo / "params.yaml").read_bytes() == (ROOT / "params.yaml").read_bytes()
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
    """A researcher's loop: commit params.yaml and the results, change an eval param, repro, diff."""
    repo, _ = smoke_repo

    def write_params(*assignments):
        show = [sys.executable, "-m", "dtrepro.profiles", "show", "smoke", *assignments]
        params = run(show, repo)
        assert params.returncode == 0, params.stderr
        (repo / "params.yaml").write_text(params.stdout)

    def dvc_repro():
        proc = run(["dvc", "repro"], repo)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return stages_run(proc.stdout)

    write_params()
    assert dvc_repro() == set()  # the same values as the profile run: nothing runs
    git = ["git", "-c", "user.name=dtrepro-test", "-c", "user.email=test@localhost"]
    for cmd in (["git", "add", "-A"], git + ["commit", "-q", "-m", "smoke run"]):
        assert run(cmd, repo).returncode == 0

    write_params("-S", "eval.seed=2000")
    assert dvc_repro() == {f"evaluate@{k}-{s}" for k in (5, 1) for s in (0, 1)} | {"report"}
    assert dvc_repro() == set()

    diff = run(["dvc", "metrics", "diff", "--json"], repo)
    assert diff.returncode == 0, diff.stderr
    changes = json.loads(diff.stdout)
    score = changes["reports/eval/k5-seed0.json"]["last.target_3600.return_mean"]
    assert score["old"] != score["new"] and score["diff"] == pytest.approx(score["new"] - score["old"])
    assert "k5.last.target_3600.normalized_score_mean" in changes["results/ablations.json"]
    assert changes["reports/eval/k5-seed0.json"]["seed"] == {"old": 1000, "new": 2000, "diff": 1000}
    text = run(["dvc", "metrics", "diff"], repo).stdout
    assert "last.target_3600.normalized_score_mean" in text


def test_download_source_runs_download_and_repair_and_caches(repo_copy, hopper_file, hopper):
    source, url = "data.source=download", f"data.url={hopper_file}"
    out = repro(repo_copy, "-S", source, "-S", url, target="repair")
    assert "> python stages/download.py" in out and "Running stage 'repair'" in out
    report = json.loads((repo_copy / "reports" / "repair.json").read_text())
    assert report["episodes"] == int((hopper[1] | hopper[2]).sum())
    assert (repo_copy / "data" / "clean.hdf5").exists()
    assert (repo_copy / "data" / "raw.hdf5").read_bytes() == hopper_file.read_bytes()

    again = repro(repo_copy, "-S", source, "-S", url, target="repair")
    assert "Running stage" not in again  # nothing changed, nothing runs

    changed = repro(repo_copy, "-S", source, "-S", url, "-S", "repair.max_episode_steps=500", target="repair")
    assert "Running stage 'repair'" in changed and "Running stage 'source'" not in changed
    assert json.loads((repo_copy / "reports" / "repair.json").read_text())["boundaries_time_limit"] > 0

    metrics = run(["dvc", "metrics", "show", "--json"], repo_copy)
    assert metrics.returncode == 0 and "boundaries_time_limit" in metrics.stdout


def test_stage_defaults_match_dvc_yaml():
    """Every stage runs with no arguments inside DVC: its default paths are dvc.yaml's (<K>, <S>: the run)."""
    text = (ROOT / "dvc.yaml").read_text().replace("${item.context_len}", "<K>").replace("${item.seed}", "<S>")
    stages = yaml.safe_load(text)["stages"]
    produced = {o if isinstance(o, str) else next(iter(o)) for s in stages.values() for o in s.get("outs", [])}
    produced |= {m if isinstance(m, str) else next(iter(m)) for s in stages.values() for m in s.get("metrics", [])}
    produced |= {p if isinstance(p, str) else next(iter(p)) for s in stages.values() for p in s.get("plots", [])}
    for stage in stages.values():
        scripts = [stage["cmd"].split()[1].replace("${data.source}", s) for s in ("download", "collect")]
        for script in set(scripts):
            help_text = run([sys.executable, str(ROOT / script), "--help"], ROOT).stdout
            for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
                path = out if isinstance(out, str) else next(iter(out))
                if not path.endswith(".sha256"):
                    assert path in help_text, (script, path)
        for dep in set(stage["deps"]) - produced:
            made_by_others = any(p.startswith(dep + "/") for p in produced)  # a folder of other stages' outputs
            assert "${" in dep or made_by_others or (ROOT / dep).exists(), dep
