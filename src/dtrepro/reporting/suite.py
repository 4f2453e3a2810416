"""The suite: the DT paper's D4RL table, our runs beside the published ones, and aggregates over datasets.

One row per dataset of the study at the headline context length and the dataset's headline
target: the Decision Transformer paper's score (Table 2, 3 seeds), CORL's last and best
checkpoints (4 seeds x 100 episodes), and ours, `last.pt` and `best.pt`, as mean ± std across
training seeds with the 95% bootstrap CI the ablation report gives. Then the aggregates over
datasets as rliable defines them (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical
Precipice"): the mean, the interquartile mean (IQM, the mean of the middle 50% of all runs'
scores) with a 95% stratified bootstrap CI (runs resampled within each dataset), and the
performance profile, the fraction of runs scoring above each threshold tau, with its own
stratified bootstrap band. These follow rliable's definitions with numpy and scipy instead of
rliable itself, which would pin pandas below 3 and add arch, statsmodels and seaborn to the image for
what is a few lines here; the tests check them against rliable's own (docs/design.md).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

from dtrepro.agent.checkpoint import CHECKPOINTS
from dtrepro.evaluation.stats import bootstrap_ci
from dtrepro.params import EvalParams, Run, StudyParams
from dtrepro.registry.datasets import PUBLISHED, PUBLISHED_SOURCES, published_text
from dtrepro.registry.scores import D4RL, label
from dtrepro.reporting import plots
from dtrepro.reporting.report import TEMPLATES, episodes_at, read_episodes, references
from dtrepro.runtime.atomic import atomic_output, write_json

CONFIDENCE = 0.95
PROFILE_POINTS = (25.0, 50.0, 75.0, 100.0)  # the thresholds the table prints (the plot has them all)


def iqm(scores: np.ndarray, axis=None) -> np.ndarray:
    """Interquartile mean: the mean of the scores left once the lowest and highest 25% are cut."""
    scores = np.asarray(scores, dtype=np.float64)
    if axis is None:
        return scipy.stats.trim_mean(scores.ravel(), 0.25)
    return scipy.stats.trim_mean(scores, 0.25, axis=axis)


def stratified_resamples(scores: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap copies of a (runs, datasets) matrix, each dataset's runs drawn with replacement on their own:
    shape (resamples, runs * datasets)."""
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(resamples, runs, tasks))
    return scores[picks, np.arange(tasks)].reshape(resamples, runs * tasks)


def interval(values: np.ndarray) -> tuple[float, float]:
    """The percentile interval of bootstrap statistics (rliable's default method)."""
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(values, [tail, 100 - tail], axis=0)
    return low, high


def aggregates(scores: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Mean and IQM of a (runs, datasets) score matrix, each with its stratified bootstrap 95% CI."""
    boot = stratified_resamples(scores, resamples, seed)
    out = {}
    for name, stat in (("mean", np.mean), ("iqm", iqm)):
        low, high = interval(stat(boot, axis=1))
        out.update({name: float(stat(scores)), f"{name}_ci95_low": float(low), f"{name}_ci95_high": float(high)})
    return out


def performance_profile(scores: np.ndarray, taus: np.ndarray, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Fraction of runs scoring above each tau (every dataset has as many runs), with its stratified 95% band."""
    boot = stratified_resamples(scores, resamples, seed)
    fraction = (scores.ravel()[:, None] > taus).mean(axis=0)
    low, high = interval((boot[:, :, None] > taus).mean(axis=1))
    return {"tau": taus, "fraction": fraction, "ci95_low": low, "ci95_high": high}


def taus_for(scores: np.ndarray) -> np.ndarray:
    """Thresholds in steps of 1 from 0 to past the best score (at least 120, past every published score)."""
    return np.arange(0.0, max(120.0, float(np.ceil(np.max(scores) / 10) * 10)) + 1.0)


def published_mean(datasets: list[str]) -> list[float] | None:
    """Each published source's mean over `datasets`, or None unless every one of them has published scores."""
    if not datasets or any(d not in PUBLISHED for d in datasets):
        return None
    return [float(np.mean([PUBLISHED[d][i][0] for d in datasets])) for i in range(len(PUBLISHED_SOURCES))]


def reference_cells(dataset: str) -> list[str]:
    return list(published_text(dataset) or ("—",) * len(PUBLISHED_SOURCES))


@dataclass(frozen=True)
class SuitePaths:
    """What the suite reads (the evaluate stages' episodes, <dataset>/<Run.name>.csv) and writes."""

    evals: Path
    markdown: Path
    metrics: Path  # every number of the table, flat
    summary: Path  # the few numbers runs are compared by: DVC's metrics
    scores_csv: Path
    profile_csv: Path
    plots_dir: Path


def run_scores(study: StudyParams, params_of: dict[str, EvalParams], evals: Path) -> dict[str, dict]:
    """Per dataset and checkpoint, each seed's episode scores at the headline K and the dataset's headline
    target: {dataset: {checkpoint: [array per seed]}}."""
    k0, found = study.context_lens[0], {}
    for name in study.datasets:
        t0 = params_of[name].targets[0]
        episodes = {s: read_episodes(Run(k0, s), evals / name, params_of[name]) for s in study.seeds}
        found[name] = {
            c: [np.array([r["normalized_score"] for r in episodes_at(episodes[s], c, t0)]) for s in study.seeds]
            for c in CHECKPOINTS
        }
    return found


def suite_tables(study: StudyParams, params_of: dict[str, EvalParams], evals: Path) -> dict:
    """The per-dataset rows, the aggregates and the performance profiles, as plain numbers."""
    first = params_of[study.datasets[0]]
    resamples, seed = first.bootstrap_resamples, first.seed
    found = run_scores(study, params_of, evals)
    rows = []
    for name in study.datasets:
        row = {"dataset": name, "env_id": params_of[name].env_id, "target": params_of[name].targets[0]}
        row["references"] = references(study, evals, name)[2]
        for c in CHECKPOINTS:
            per_seed = np.array([s.mean() for s in found[name][c]])
            low, high = bootstrap_ci(found[name][c], resamples, seed)
            row.update(
                {
                    f"{c}_mean": float(per_seed.mean()),
                    f"{c}_std_seeds": float(per_seed.std()),
                    f"{c}_ci95_low": low,
                    f"{c}_ci95_high": high,
                }
            )
        rows.append(row)
    out = {"rows": rows, "aggregate": {}, "profile": {}}
    # per checkpoint, (runs, datasets): each run's mean episode score, rliable's score matrix
    matrices = {c: np.array([[s.mean() for s in found[name][c]] for name in study.datasets]).T for c in CHECKPOINTS}
    taus = taus_for(np.concatenate([m.ravel() for m in matrices.values()]))
    for c, matrix in matrices.items():
        out["aggregate"][c] = aggregates(matrix, resamples, seed)
        out["profile"][c] = performance_profile(matrix, taus, resamples, seed)
    out["published_mean"] = published_mean(list(study.datasets))
    return out


def _pm(row: dict, c: str) -> str:
    low, high = row[f"{c}_ci95_low"], row[f"{c}_ci95_high"]
    return f"{row[f'{c}_mean']:.1f} ± {row[f'{c}_std_seeds']:.1f} [{low:.1f}, {high:.1f}]"


def markdown(study: StudyParams, tables: dict, n_episodes: int) -> str:
    rows, means = tables["rows"], tables["published_mean"]
    own = sorted({r["references"] for r in rows}) != [D4RL]  # some dataset normalised with its own references
    header = ["dataset", "target", *PUBLISHED_SOURCES.values(), "ours `last.pt`", "ours `best.pt`"]
    scores = [
        [r["dataset"], f"{r['target']:g}", *reference_cells(r["dataset"]), _pm(r, "last"), _pm(r, "best")]
        + [r["references"]] * own
        for r in rows
    ]
    ours = [f"{np.mean([r[f'{c}_mean'] for r in rows]):.1f}" for c in CHECKPOINTS]
    refs = [f"{m:.1f}" if i == 0 else f"{m:.2f}" for i, m in enumerate(means)] if means else ["—"] * 3
    scores.append([f"average ({len(rows)} dataset{'s' * (len(rows) > 1)})", "", *refs, *ours] + [""] * own)
    aggregates = [
        [f"`{c}.pt`", f"{a['mean']:.1f}", f"[{a['mean_ci95_low']:.1f}, {a['mean_ci95_high']:.1f}]", f"{a['iqm']:.1f}"]
        + [f"[{a['iqm_ci95_low']:.1f}, {a['iqm_ci95_high']:.1f}]"]
        for c in CHECKPOINTS
        for a in [tables["aggregate"][c]]
    ]
    profile = [
        [f"`{c}.pt`", *(f"{np.interp(t, p['tau'], p['fraction']):.2f}" for t in PROFILE_POINTS)]
        for c in CHECKPOINTS
        for p in [tables["profile"][c]]
    ]
    scale = "Normalised scores, each dataset's with the references its `references` column names (d4rl: D4RL's)"
    return TEMPLATES.get_template("suite.md.j2").render(
        scale=scale if own else "D4RL-normalised scores",
        k0=study.context_lens[0],
        seeds=len(study.seeds),
        episodes=n_episodes,
        header=header + ["references"] * own,
        scores=scores,
        runs=len(study.seeds) * len(rows),
        aggregates=aggregates,
        taus=[f"tau = {t:g}" for t in PROFILE_POINTS],
        profile=profile,
    )


def flat_metrics(tables: dict) -> dict:
    metrics = {}
    for r in tables["rows"]:
        metrics.update({f"{r['dataset']}.{k}": v for k, v in r.items() if k != "dataset"})  # references: a name
    for c in CHECKPOINTS:
        metrics.update({f"aggregate.{c}.{k}": v for k, v in tables["aggregate"][c].items()})
    return metrics


def summary(tables: dict) -> dict:
    """The numbers runs are compared by, few enough for `dvc exp show` on one screen: the mean and the IQM over
    the study's datasets (and seeds) of the last and best checkpoints' scores at each dataset's headline K and
    target, in normalised points to two decimals, the references they are normalised with (d4rl: D4RL's) and the
    envs the datasets' null env_id resolved to: what ran."""
    summary = {
        name: {c: round(float(tables["aggregate"][c][name]), 2) for c in CHECKPOINTS} for name in ("mean", "iqm")
    }
    joined = {k: ", ".join(sorted({r[k] for r in tables["rows"]})) for k in ("references", "env_id")}
    return {**summary, "references": joined["references"], "env": joined["env_id"]}


def write_suite(study: StudyParams, params_of: dict[str, EvalParams], paths: SuitePaths) -> dict:
    """Write the suite's table, metrics, plot data and PNGs; return the metrics."""
    tables = suite_tables(study, params_of, paths.evals)
    first = params_of[study.datasets[0]]
    with atomic_output(paths.scores_csv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", *PUBLISHED_SOURCES, "last_mean", "best_mean"])
        for r in tables["rows"]:
            refs = [m for m, _ in PUBLISHED[r["dataset"]]] if r["dataset"] in PUBLISHED else ["", "", ""]
            writer.writerow([r["dataset"], *refs, r["last_mean"], r["best_mean"]])
    with atomic_output(paths.profile_csv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tau", "last_fraction", "best_fraction"])
        last, best = tables["profile"]["last"], tables["profile"]["best"]
        taus = last["tau"]
        best_at = np.interp(taus, best["tau"], best["fraction"])
        writer.writerows(
            [[float(t), float(a), float(b)] for t, a, b in zip(taus, last["fraction"], best_at, strict=True)]
        )
    sources = sorted({r["references"] for r in tables["rows"]})
    plots.suite_scores(tables["rows"], paths.plots_dir / "scores.png", label(", ".join(sources)))
    plots.performance_profiles(tables["profile"], paths.plots_dir / "performance_profile.png")
    with atomic_output(paths.markdown) as tmp:
        tmp.write_text(markdown(study, tables, first.episodes))
    metrics = flat_metrics(tables)
    write_json(paths.metrics, metrics)
    write_json(paths.summary, summary(tables))
    return metrics
