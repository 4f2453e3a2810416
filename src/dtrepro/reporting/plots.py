"""PNG figures for people who do not run `dvc plots`: learning curves and the ablations."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dtrepro.registry.datasets import PUBLISHED, PUBLISHED_SOURCES  # noqa: E402
from dtrepro.runtime.atomic import atomic_output  # noqa: E402


def save(fig, path: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def learning_curves(logs: dict[str, list[dict]], path: str | os.PathLike, score_label: str) -> None:
    """Training loss and periodic evaluation score (`score_label`: which references) against step, one line per run."""
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in logs.items():
        pts = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        if pts:
            loss_ax.plot(*zip(*pts, strict=True), label=name)
        ev = [(r["step"], r["eval_score"]) for r in rows if r.get("eval_score") is not None]
        if ev:
            score_ax.plot(*zip(*ev, strict=True), marker="o", label=name)
    loss_ax.set(xlabel="step", ylabel="action MSE", yscale="log", title="training loss")
    score_ax.set(xlabel="step", ylabel=score_label, title="periodic evaluation (train.eval_*)")
    loss_ax.legend(fontsize=7)
    save(fig, path)


def _checkpoints(table: list[dict]) -> tuple[str, ...]:
    """The checkpoints worth drawing: best.pt only where some run's best is not its last (equal numbers)."""
    score = {(r["context_len"], r["target"], r["checkpoint"]): r["normalized_score_mean"] for r in table}
    same = all(score[(k, t, "best")] == v for (k, t, c), v in score.items() if c == "last")
    return ("last",) if same else ("last", "best")


def return_conditioning(table: list[dict], path: str | os.PathLike, data: dict | None = None) -> None:
    """Achieved against requested return, per context length (the study's order) and checkpoint, with the
    across-seed spread; the data's mean and best episode returns as reference lines (`data`: the repair report's
    episode statistics)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    shown = _checkpoints(table)
    for (k, ckpt), rows in _groups(table, ("context_len", "checkpoint")).items():
        if ckpt not in shown:
            continue
        rows = sorted(rows, key=lambda r: r["target"])
        ax.errorbar(
            [r["target"] for r in rows],
            [r["return_mean"] for r in rows],
            yerr=[r["return_std_seeds"] for r in rows],
            marker="o",
            capsize=3,
            linestyle="-" if ckpt == "last" else "--",
            label=f"K={k}, {ckpt}.pt" + (" (= best.pt)" if shown == ("last",) else ""),
        )
    top = max(r["target"] for r in table)
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="achieved = requested")
    if data and "episode_return_mean" in data:
        ax.axhline(data["episode_return_mean"], color="black", linestyle=":", linewidth=1, label="data: mean episode")
        ax.axhline(data["episode_return_max"], color="black", linestyle="-.", linewidth=1, label="data: best episode")
    ax.set(xlabel="requested return (target)", ylabel="achieved return", title="return conditioning")
    ax.legend(fontsize=8)
    save(fig, path)


def context_length(table: list[dict], path: str | os.PathLike, score_label: str) -> None:
    """Normalised score per context length (at the headline target; the study's order, the headline K first),
    last and best checkpoint side by side where they differ."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(dict.fromkeys(r["context_len"] for r in table))
    shown = _checkpoints(table)
    for i, ckpt in enumerate(shown):
        rows = {r["context_len"]: r for r in table if r["checkpoint"] == ckpt}
        xs = [j + (i - (len(shown) - 1) / 2) * 0.35 for j in range(len(ks))]
        ax.bar(
            xs,
            [rows[k]["normalized_score_mean"] for k in ks],
            width=0.35,
            yerr=[rows[k]["normalized_score_std_seeds"] for k in ks],
            capsize=4,
            label=f"{ckpt}.pt" + (" (= best.pt)" if shown == ("last",) else ""),
        )
    ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
    ax.set(ylabel=score_label, title="context length (mean ± std across seeds)")
    ax.legend()
    save(fig, path)


def suite_scores(rows: list[dict], path: str | os.PathLike, score_label: str) -> None:
    """Per dataset: the published scores and ours (last and best, mean ± std across seeds) side by side."""
    names = [r["dataset"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5))
    published = [
        (label, [PUBLISHED[n][i][0] if n in PUBLISHED else float("nan") for n in names], None)
        for i, label in enumerate(PUBLISHED_SOURCES.values())
    ]
    series = [s for s in published if any(v == v for v in s[1])]  # a source with no score here: no bar, no legend
    series += [
        (f"ours {c}.pt", [r[f"{c}_mean"] for r in rows], [r[f"{c}_std_seeds"] for r in rows]) for c in ("last", "best")
    ]
    width = 0.8 / len(series)
    for i, (label, values, errors) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, values, width=width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel=score_label, title="the Decision Transformer per dataset")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, covering none
    save(fig, path)


def performance_profiles(profiles: dict[str, dict], path: str | os.PathLike) -> None:
    """Fraction of runs scoring above tau, per checkpoint, with the stratified bootstrap 95% band."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for ckpt, p in profiles.items():
        ax.plot(p["tau"], p["fraction"], label=f"{ckpt}.pt")
        ax.fill_between(p["tau"], p["ci95_low"], p["ci95_high"], alpha=0.25)
    ax.set(xlabel="normalised score tau", ylabel="fraction of runs with score > tau", title="performance profile")
    ax.set_ylim(0, 1.02)
    ax.legend()
    save(fig, path)


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups
