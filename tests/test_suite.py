"""The suite: the DT paper's table beside ours, and the aggregates over datasets as rliable defines them."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import yaml

from dtrepro.registry.datasets import PUBLISHED, family, published_text
from dtrepro.reporting.suite import aggregates, iqm, performance_profile, published_mean, stratified_resamples

from helpers import copy_repo, run

NINE = list(PUBLISHED)


def test_the_published_averages_are_the_papers_own():
    paper, corl_last, corl_best = published_mean(NINE)
    assert round(paper, 1) == 74.7 and round(corl_last, 2) == 73.84 and round(corl_best, 2) == 77.49
    assert published_mean(NINE + ["collected-hopper-medium"]) is None  # no average over what has no references
    assert published_text("walker2d-medium-replay-v2") == ("66.6 ± 3.0", "59.86 ± 2.73", "68.22 ± 1.20")


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(np.mean([3, 4, 5, 6]))
    scores = np.array([[0.0, 10.0], [100.0, 11.0], [50.0, 12.0], [-40.0, 13.0]])  # (runs, datasets)
    middle = np.sort(scores.ravel())[2:6]
    assert iqm(scores) == pytest.approx(middle.mean())


def test_stratified_resamples_draw_each_datasets_runs_from_that_dataset_only():
    scores = np.array([[1.0, 100.0, 1000.0], [2.0, 200.0, 2000.0], [3.0, 300.0, 3000.0]])  # 3 runs x 3 datasets
    boot = stratified_resamples(scores, 500, seed=0).reshape(500, 3, 3)
    for task in range(3):
        assert set(np.unique(boot[:, :, task])) <= set(scores[:, task])
    assert len(np.unique(boot[:, :, 0])) == 3  # with replacement, every run turns up


def test_aggregate_intervals_hold_their_point_and_shrink_with_agreeing_runs():
    rng = np.random.default_rng(0)
    noisy = rng.normal(60, 15, size=(5, 9))
    agreeing = 60 + rng.normal(0, 0.5, size=(5, 9))
    wide, narrow = aggregates(noisy, 2000, 0), aggregates(agreeing, 2000, 0)
    for a in (wide, narrow):
        for name in ("mean", "iqm"):
            assert a[f"{name}_ci95_low"] <= a[name] <= a[f"{name}_ci95_high"]
    assert narrow["iqm_ci95_high"] - narrow["iqm_ci95_low"] < wide["iqm_ci95_high"] - wide["iqm_ci95_low"]
    assert wide["mean"] == pytest.approx(noisy.mean()) and wide["iqm"] == pytest.approx(iqm(noisy))


def test_the_performance_profile_is_the_fraction_of_runs_above_tau():
    scores = np.array([[10.0, 70.0], [30.0, 90.0]])
    profile = performance_profile(scores, np.array([0.0, 20.0, 80.0, 100.0]), 500, 0)
    np.testing.assert_allclose(profile["fraction"], [1.0, 0.75, 0.25, 0.0])
    assert np.all(profile["ci95_low"] <= profile["fraction"]) and np.all(profile["fraction"] <= profile["ci95_high"])


def stratified_tasks(runs: int = 10) -> np.ndarray:
    """A (runs, datasets) matrix whose datasets score far apart, so that resampling runs within each dataset
    (stratified) and across all of them (not) give clearly different intervals."""
    rng = np.random.default_rng(3)
    return np.stack([rng.normal(m, 12.0, size=runs) for m in (10.0, 40.0, 70.0, 100.0, 130.0)], axis=1)


@pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # arch's, under rliable 1.2.0
def test_the_aggregates_and_the_profile_agree_with_rliable_itself():
    """Points exactly, intervals within Monte Carlo error (two bootstraps with their own random streams); a
    resampling that ignored the datasets would fall outside that error."""
    from rliable import library, metrics

    scores, reps = stratified_tasks(), 20_000
    ours = aggregates(scores, reps, 0)
    for name, stat in (("mean", metrics.aggregate_mean), ("iqm", metrics.aggregate_iqm)):
        point, ci = library.get_interval_estimates(
            {"x": scores}, lambda s, f=stat: np.array([f(s)]), reps=reps, random_state=np.random.RandomState(1)
        )
        low, high = ci["x"][:, 0]
        assert ours[name] == pytest.approx(point["x"][0], rel=1e-12)
        width = high - low
        assert abs(ours[f"{name}_ci95_low"] - low) < 0.05 * width
        assert abs(ours[f"{name}_ci95_high"] - high) < 0.05 * width
        pooled = np.random.default_rng(2).choice(scores.ravel(), size=(2000, scores.size))  # from all datasets at once
        pooled_stat = iqm(pooled, axis=1) if name == "iqm" else pooled.mean(axis=1)
        pooled_low, pooled_high = np.percentile(pooled_stat, [2.5, 97.5])
        assert pooled_high - pooled_low > 2 * width
    taus = np.array([0.0, 25.0, 50.0, 75.0, 100.0, 125.0])
    profile = performance_profile(scores, taus, reps, 0)
    theirs, bands = library.create_performance_profile({"x": scores}, taus, reps=reps)
    np.testing.assert_allclose(profile["fraction"], theirs["x"], rtol=0, atol=1e-12)
    step = 1 / scores.size  # a band's ends move in steps of one run
    np.testing.assert_allclose(profile["ci95_low"], bands["x"][0], atol=2 * step + 1e-12)
    np.testing.assert_allclose(profile["ci95_high"], bands["x"][1], atol=2 * step + 1e-12)


@pytest.mark.slow
def test_suite_smoke_runs_three_envs_offline_and_its_table_holds_every_dataset(tmp_path):
    """`make suite-smoke`: three envs' datasets of three kinds collected here, the whole pipeline as one DVC
    experiment, and the suite table whose aggregates the test recomputes from the episode rows."""
    repo = copy_repo(tmp_path)
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", "run", "suite-smoke"], repo, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = yaml.safe_load((repo / "params.yaml").read_text())["study"]
    names, k, seeds = study["datasets"], study["context_lens"][0], study["seeds"]
    assert [n.split("-")[1] for n in names] == ["hopper", "walker2d", "halfcheetah"]
    envs = {"hopper": "Hopper-v4", "walker2d": "Walker2d-v4", "halfcheetah": "HalfCheetah-v4"}
    table = (repo / "results" / "suite.md").read_text()
    metrics = json.loads((repo / "results" / "suite.json").read_text())
    per_run = []  # (runs, datasets): each run's mean last.pt score at the dataset's headline target
    for name in names:
        evaluation = json.loads((repo / f"reports/eval/{name}/k{k}-seed{seeds[0]}.json").read_text())
        assert evaluation["env_id"] == envs[name.split("-")[1]]
        target = family(name).targets[0]  # the paper's high target for the env: eval.targets is null
        scores = []
        for s in seeds:
            with open(repo / f"reports/eval/{name}/k{k}-seed{s}.csv") as f:
                rows = [r for r in csv.DictReader(f) if r["checkpoint"] == "last" and float(r["target"]) == target]
            scores.append(np.mean([float(r["normalized_score"]) for r in rows]))
        per_run.append(scores)
        assert f"| {name} | {target:g} | — | — | — | {np.mean(scores):.1f} ± {np.std(scores):.1f} [" in table
        assert metrics[f"{name}.last_mean"] == pytest.approx(np.mean(scores))
    matrix = np.array(per_run).T
    assert metrics["aggregate.last.mean"] == pytest.approx(matrix.mean())
    assert metrics["aggregate.last.iqm"] == pytest.approx(iqm(matrix))
    assert (
        metrics["aggregate.last.iqm_ci95_low"]
        <= metrics["aggregate.last.iqm"]
        <= metrics["aggregate.last.iqm_ci95_high"]
    )
    for png in ("scores", "performance_profile"):
        assert (repo / "results" / "suite-plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    source = {n: json.loads((repo / f"reports/source/{n}.json").read_text()) for n in names}
    assert source[names[0]]["kind"] == "medium-expert" and "expert_normalized_mean" in source[names[0]]
    assert source[names[1]]["rows"] == source[names[1]]["medium_env_steps"]  # the replay: every training step
    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo).stdout
