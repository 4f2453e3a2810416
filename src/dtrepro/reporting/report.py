"""The ablation report: every run's evaluations gathered into tables, metrics and plots, by dataset.

Each run of the study (one dataset, one context length, one training seed) was evaluated at
every target with both checkpoints. For each (context length, checkpoint,
target) the report takes every seed's mean score and gives their mean ± std
across seeds, as the paper reports, beside the spread of single episodes and a
95% bootstrap interval that resamples each seed's episodes on its own.
Standard deviations are population ones (numpy's default).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from dtrepro.agent.checkpoint import CHECKPOINTS
from dtrepro.evaluation.results import metric_key
from dtrepro.evaluation.stats import bootstrap_ci, difference_ci, seed_test
from dtrepro.params import EvalParams, Run, StudyParams, read_yaml
from dtrepro.registry.datasets import published
from dtrepro.registry.scores import D4RL, label, normalized_score, reference_scores
from dtrepro.reporting import findings, plots
from dtrepro.runtime.atomic import atomic_output, write_json
from dtrepro.runtime.errors import DtreproError


@dataclass(frozen=True)
class ReportPaths:
    """What the report reads (folders of every run's files, <dataset>/<Run.name>) and writes."""

    evals: Path  # <dataset>/<run>.csv: the evaluate stages' episodes
    train_logs: Path  # <dataset>/<run>.tsv: the train stages' logs
    repair_reports: Path  # <dataset>.json: the repair stages' reports (the data's episode returns)
    source_reports: Path  # <dataset>.json: the source stages' metrics (the data's SHA-256 and provenance)
    hub_reports: Path  # <dataset>.json: the hub stages' metrics (Hugging Face models scored on the dataset)
    markdown: Path
    metrics: Path
    return_csv: Path
    context_csv: Path
    plots_dir: Path
    lock: Path | None = None  # dvc.lock: the checkpoints' hashes the evaluations must name


def recorded_outputs(lock: Path | None) -> dict[str, str]:
    """path -> MD5 of every output dvc.lock records (each train stage's checkpoints among them); {} without one."""
    if lock is None or not lock.exists():
        return {}
    stages = (read_yaml(lock.read_text(), str(lock)) or {}).get("stages") or {}
    return {out["path"]: out.get("md5") for stage in stages.values() for out in stage.get("outs", [])}


def read_episodes(run: Run, folder: Path, params: EvalParams, recorded: dict[str, str] | None = None) -> list[dict]:
    """One run's episode rows, checked to be an evaluation made with `params` whose episodes, metrics and
    checkpoints agree (`check_scored`; `recorded`: dvc.lock's hashes)."""
    path = folder / f"{run.name}.csv"
    if not path.exists():
        raise DtreproError(
            f"{path} does not exist: run {run.name} of {folder.name} has not been evaluated. Run `dvc repro` first."
        )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update(step=int(r["step"]), target=float(r["target"]), length=int(r["length"]), seed=int(r["seed"]))
        r.update({k: float(r[k]) for k in ("return", "normalized_score")})
    check_evaluation(rows, params, path)
    check_scored(rows, params, path, recorded or {})
    return rows


def check_scored(rows: list[dict], params: EvalParams, path: Path, recorded: dict[str, str]) -> None:
    """Refuse an evaluation whose episodes (`path`) and metrics (its .json) disagree: on the checkpoint each
    scored (its MD5), with the checkpoint dvc.lock records for that path, or on any mean score. They are one
    stage's outputs: a disagreement is a file changed after the run or a run-cache entry that claims what its
    run did not make."""
    metrics_path = path.with_suffix(".json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    problem = None
    for c in CHECKPOINTS:
        named, md5 = sorted({r["checkpoint_md5"] for r in rows if r["checkpoint"] == c}), metrics.get(f"{c}.md5")
        lock = recorded.get(metrics.get(f"{c}.path"))
        means = {t: float(np.mean([r["normalized_score"] for r in episodes_at(rows, c, t)])) for t in params.targets}
        wrong = [t for t, m in means.items() if not math.isclose(m, metrics.get(metric_key(c, t, KEY), math.nan))]
        if named != [md5]:
            problem = f"the episodes of {c}.pt name the checkpoint {', '.join(named)}, the metrics {md5}"
        elif lock not in (None, md5):
            problem = f"both scored {c}.pt with MD5 {md5}, but dvc.lock records {lock} for {metrics[f'{c}.path']}"
        elif wrong:
            t = wrong[0]
            problem = (
                f"the episodes of {c}.pt at target {t:g} average {means[t]:.4f}, the metrics say "
                f"{metrics.get(metric_key(c, t, KEY))}"
            )
        if problem:
            raise DtreproError(
                f"{path} and {metrics_path} do not agree: {problem}. They are the outputs of one evaluate stage, so "
                f"one was changed after it ran, or restored from a run-cache entry that claims what no run made. "
                f"`dtrepro verify` re-runs evaluate stages and compares; `dvc repro --force --single-item` of this "
                f"one makes it again."
            )


KEY = "normalized_score_mean"


def check_evaluation(rows: list[dict], params: EvalParams, path: Path) -> None:
    """Refuse an evaluation whose checkpoints, targets or episode seeds are not those of `params`: a report must
    not average evaluations made with different eval params."""
    wanted = {(c, t): params.episode_seeds for c in CHECKPOINTS for t in params.targets}
    found: dict[tuple, list[int]] = {}
    for r in rows:
        found.setdefault((r["checkpoint"], r["target"]), []).append(r["seed"])
    if found != wanted:
        made = {(c, t): len(seeds) for (c, t), seeds in sorted(found.items())}
        raise DtreproError(
            f"{path} is not an evaluation with the eval params of params.yaml ({len(CHECKPOINTS)} checkpoints at "
            f"targets {[f'{t:g}' for t in params.targets]}, {params.episodes} episodes each with episode seeds "
            f"{params.seed}–{params.seed + params.episodes - 1}); it holds {made} (checkpoint, target): episodes. It "
            f"was made with other params or changed by hand. Run `dvc repro` so that its evaluate stage runs again."
        )


def episodes_at(rows: list[dict], checkpoint: str, target: float) -> list[dict]:
    """One run's episode rows of one checkpoint at one target."""
    return [r for r in rows if r["checkpoint"] == checkpoint and r["target"] == target]


def read_train_log(run: Run, folder: Path) -> list[dict]:
    path = folder / f"{run.name}.tsv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) if v else None for k, v in r.items()} for r in csv.DictReader(f, delimiter="\t")]


def aggregate(study: StudyParams, params: EvalParams, episodes: dict[Run, list[dict]]) -> list[dict]:
    """One row per (context length, checkpoint, target): across-seed mean ± std, episode spread, 95% CI."""
    table = []
    for k in study.context_lens:
        for ckpt in CHECKPOINTS:
            for target in params.targets:
                per_seed = [episodes_at(episodes[Run(k, s)], ckpt, target) for s in study.seeds]
                scores = [np.array([r["normalized_score"] for r in rows]) for rows in per_seed]
                returns = [np.array([r["return"] for r in rows]) for rows in per_seed]
                seed_scores = np.array([s.mean() for s in scores])
                seed_returns = np.array([r.mean() for r in returns])
                low, high = bootstrap_ci(scores, params.bootstrap_resamples, params.seed)
                table.append(
                    {
                        "context_len": k,
                        "checkpoint": ckpt,
                        "target": target,
                        "normalized_score_mean": float(seed_scores.mean()),
                        "normalized_score_std_seeds": float(seed_scores.std()),
                        "normalized_score_std_episodes": float(np.concatenate(scores).std()),
                        "normalized_score_ci95_low": low,
                        "normalized_score_ci95_high": high,
                        "return_mean": float(seed_returns.mean()),
                        "return_std_seeds": float(seed_returns.std()),
                        "length_mean": float(np.mean([r["length"] for rows in per_seed for r in rows])),
                        "seeds": len(study.seeds),
                        "episodes": sum(len(rows) for rows in per_seed),
                    }
                )
    return table


def by_key(table: list[dict]) -> dict[tuple, dict]:
    """The aggregate rows by (context length, checkpoint, target)."""
    return {(r["context_len"], r["checkpoint"], r["target"]): r for r in table}


def _score(row: dict) -> str:
    return f"{row['normalized_score_mean']:.1f} ± {row['normalized_score_std_seeds']:.1f}"


def _ci(row: dict) -> str:
    return f"[{row['normalized_score_ci95_low']:.1f}, {row['normalized_score_ci95_high']:.1f}]"


MACROS = "tables.md.j2"  # the Markdown table macro every template imports (named here: a dep of their stages)
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def section(study: StudyParams, params: EvalParams, found: dict, name: str) -> dict:
    """What the template shows of one dataset: its findings in words, then its tables' rows, formatted."""
    same = {k: findings.same_checkpoints(found["per_seed"], k) for k in study.context_lens}
    shown = [c for c in CHECKPOINTS if c == "last" or not all(same.values())]  # best.pt rows only where they differ
    dataset, pick = found["data"], by_key(found["table"])
    k0, t0 = study.context_lens[0], params.targets[0]
    ref_min, ref_max, ref_source = dataset["refs"]
    returns = [dataset.get("episode_return_mean"), dataset.get("episode_return_max")]
    data_scores = normalized_score(returns, params.env_id, (ref_min, ref_max)) if returns[0] is not None else None
    return {
        "name": name,
        "env_id": params.env_id,
        "k0": k0,
        "t0": f"{t0:g}",
        "findings": _findings(study, params, found, same, data_scores),
        "headline": [
            [f"`{c}.pt`", _score(r), f"{r['normalized_score_std_episodes']:.1f}", _ci(r), f"{r['length_mean']:.0f}"]
            for c in shown
            for r in [pick[(k0, c, t0)]]
        ],
        "own_references": ref_source != D4RL and f"{ref_source}: random {ref_min:g}, expert {ref_max:g}",
        "data_scores": data_scores is not None and [f"{x:.1f}" for x in data_scores],
        "provenance": dataset["source"].get("sha256") and provenance_line(dataset["source"]),
        "published": published(name),
        "conditioning": [
            [f"{t:g}", f"`{c}.pt`", f"{r['return_mean']:.0f} ± {r['return_std_seeds']:.0f}", _score(r), _ci(r)]
            + [f"{r['length_mean']:.0f}"]
            for c in shown
            for t in params.targets
            for r in [pick[(k0, c, t)]]
        ],
        "context": [
            [k, f"`{c}.pt`", _score(r), _ci(r), f"{r['length_mean']:.0f}"]
            for c in shown
            for k in study.context_lens
            for r in [pick[(k, c, t0)]]
        ],
        "hub": hub_rows(dataset["hub"], params.targets),
        "per_seed": [
            [p["context_len"], p["seed"], p["last_step"], f"{p['last_score']:.1f}", p["best_step"]]
            + [f"{p['best_score']:.1f}"]
            for p in found["per_seed"]
        ],
    }


def hub_rows(hub: dict, targets: list[float]) -> list[list]:
    """The Hugging Face models' rows (the hub stage's metrics): one per folder and target, as the study's."""
    rows = []
    for folder in hub.get("models", []):
        for t in targets:
            r = {k: hub[metric_key(folder, t, k)] for k in SUMMARY_FIELDS}
            rows.append(
                [literal(folder), hub["context_len"], f"{t:g}", f"{r['return_mean']:.0f} ± {r['return_std']:.0f}"]
                + [f"{r[KEY]:.1f}", _ci(r), f"{r['length_mean']:.0f}"]
            )
    return rows


SUMMARY_FIELDS = (
    "return_mean",
    "return_std",
    KEY,
    "normalized_score_ci95_low",
    "normalized_score_ci95_high",
    "length_mean",
)


def _findings(study: StudyParams, params: EvalParams, found: dict, same: dict[int, bool], data_scores) -> list[str]:
    pick, k0, t0 = by_key(found["table"]), study.context_lens[0], params.targets[0]
    ref_min, ref_max, _ = found["data"]["refs"]
    lines = [findings.conditioning([pick[(k0, "last", t)] for t in params.targets], (ref_min, ref_max))]
    if data_scores is not None:
        lines.append(findings.against_data(pick[(k0, "last", t0)], *data_scores))
    for k, (diff, low, high, p) in found["differences"].items():
        lines.append(findings.context(k0, k, diff, low, high, p, len(study.seeds)))
    if all(same.values()):
        lines.append(
            "`best.pt` is `last.pt` for every run (the last periodic evaluation was the best): the tables show "
            "`last.pt` alone."
        )
    elif any(same.values()):
        ks = ", ".join(f"K={k}" for k, v in same.items() if v)
        lines.append(f"At {ks}, `best.pt` is `last.pt` for every seed (the last periodic evaluation was the best).")
    return lines


def literal(value) -> str:
    """`value` as a Markdown code span: a string from a data file, params or the environment shown as written,
    never read as Markdown or HTML (the span's fence is longer than any run of backticks inside it)."""
    text = " ".join(str(value).split())
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def provenance_line(source: dict) -> str:
    """Where the data came from, by its SHA-256, and for collected data the machine facts it depends on; every
    value read from the source's report shown as a literal."""
    line = f"Data: SHA-256 {literal(source['sha256'][:16])}…"
    if source.get("source") == "collect":
        return (
            f"{line}, collected on {literal(source['cpu'])} (numpy SIMD {literal(source['numpy_simd'])}, OpenBLAS "
            f"kernels {literal(source['blas_core'])}) with MuJoCo {literal(source['version/mujoco'])}, gymnasium "
            f"{literal(source['version/gymnasium'])} and {literal(source['workers'])} worker processes. The same seed "
            "gives the same bytes on any machine with the same kernels and versions; with others ARS finds other "
            "policies, and the data differ."
        )
    if source.get("url"):
        return f"{line}, downloaded from {literal(source['url'])}."
    return f"{line} ({literal(source.get('source', 'unknown source'))})."


def flat_metrics(name: str, table: list[dict], per_seed: list[dict]) -> dict:
    """Stable flat keys: `hopper-medium-v2.k20.last.target_3600.normalized_score_mean`, ...,
    `hopper-medium-v2.k20.seed0.last_score`."""
    metrics = {}
    for r in table:
        prefix = f"{name}.k{r['context_len']}.{r['checkpoint']}.target_{r['target']:g}"
        metrics.update({f"{prefix}.{k}": v for k, v in r.items() if k not in ("context_len", "checkpoint", "target")})
    for p in per_seed:
        prefix = f"{name}.k{p['context_len']}.seed{p['seed']}"
        metrics.update({f"{prefix}.{k}": v for k, v in p.items() if k not in ("context_len", "seed")})
    return metrics


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def references(study: StudyParams, evals: Path, name: str) -> tuple[float, float, str]:
    """The reference scores a dataset's evaluations normalised with (`registry.scores.reference_scores`)."""
    evaluation = evals / name / f"{study.runs[0].name}.json"
    return reference_scores(json.loads(evaluation.read_text()) if evaluation.exists() else {}, name)


def dataset_report(study: StudyParams, params: EvalParams, paths: ReportPaths, name: str) -> dict:
    """One dataset's tables: its aggregate rows, per-seed rows, data statistics, and its PNGs written."""
    recorded = recorded_outputs(paths.lock)
    episodes = {run: read_episodes(run, paths.evals / name, params, recorded) for run in study.runs}
    table = aggregate(study, params, episodes)
    t0 = params.targets[0]
    per_seed = []
    for run in study.runs:
        first = {c: episodes_at(episodes[run], c, t0) for c in CHECKPOINTS}
        entry = {"context_len": run.context_len, "seed": run.seed}
        for c in CHECKPOINTS:
            entry[f"{c}_step"] = first[c][0]["step"]
            entry[f"{c}_score"] = float(np.mean([r["normalized_score"] for r in first[c]]))
        per_seed.append(entry)
    differences = {}  # other K -> (difference of last.pt scores at the headline target, CI low, CI high, seeds' p)
    k0 = study.context_lens[0]
    for k in study.context_lens[1:]:
        a, b = (
            [
                np.array([r["normalized_score"] for r in episodes_at(episodes[Run(kk, s)], "last", t0)])
                for s in study.seeds
            ]
            for kk in (k0, k)
        )
        differences[k] = (*difference_ci(a, b, params.bootstrap_resamples, params.seed), seed_test(a, b))
    repair = paths.repair_reports / f"{name}.json"
    data = json.loads(repair.read_text()) if repair.exists() else {}
    source = paths.source_reports / f"{name}.json"
    data["source"] = json.loads(source.read_text()) if source.exists() else {}
    data["refs"] = references(study, paths.evals, name)
    hub = paths.hub_reports / f"{name}.json"
    data["hub"] = json.loads(hub.read_text()) if hub.exists() else {}
    plots_dir = paths.plots_dir / name
    score_label = label(data["refs"][2])
    plots.return_conditioning(table, plots_dir / "return_conditioning.png", data)
    plots.context_length([r for r in table if r["target"] == t0], plots_dir / "context_length.png", score_label)
    plots.learning_curves(
        {run.name: read_train_log(run, paths.train_logs / name) for run in study.runs},
        plots_dir / "learning_curves.png",
        score_label,
    )
    return {"table": table, "per_seed": per_seed, "data": data, "differences": differences}


def write_report(study: StudyParams, params_of: dict[str, EvalParams], paths: ReportPaths) -> dict:
    """Read every run's evaluation, write the tables, the metrics, the plot data and the PNGs.

    `params_of` holds the eval section of each dataset of the study (its env and targets filled in).
    """
    sections, metrics, return_rows, context_rows = [], {}, [], []
    for name in study.datasets:
        params = params_of[name]
        found = dataset_report(study, params, paths, name)
        table, per_seed = found["table"], found["per_seed"]
        sections.append(section(study, params, found, name))
        metrics.update(flat_metrics(name, table, per_seed))
        metrics[f"{name}.references"] = found["data"]["refs"][2]  # what every score of the dataset is normalised with
        hub = found["data"]["hub"]
        metrics.update({f"{name}.hub.{k}": v for k, v in hub.items() if k.startswith(tuple(hub.get("models", [])))})
        pick, k0, t0 = by_key(table), study.context_lens[0], params.targets[0]
        return_rows += [
            [name, t, pick[(k0, "last", t)]["return_mean"], pick[(k0, "best", t)]["return_mean"]]
            + [pick[(k0, "last", t)]["normalized_score_mean"], pick[(k0, "best", t)]["normalized_score_mean"]]
            for t in sorted(params.targets)
        ]
        context_rows += [
            [name, k, pick[(k, "last", t0)]["normalized_score_mean"], pick[(k, "best", t0)]["normalized_score_mean"]]
            for k in sorted(study.context_lens)
        ]
    _write_csv(
        paths.return_csv,
        ["dataset", "target", "last_return_mean", "best_return_mean"]
        + ["last_normalized_score_mean", "best_normalized_score_mean"],
        return_rows,
    )
    _write_csv(
        paths.context_csv,
        ["dataset", "context_len", "last_normalized_score_mean", "best_normalized_score_mean"],
        context_rows,
    )
    with atomic_output(paths.markdown) as tmp:
        first = params_of[study.datasets[0]]
        tmp.write_text(TEMPLATES.get_template("ablations.md.j2").render(study=study, eval=first, datasets=sections))
    write_json(paths.metrics, metrics)
    return metrics
