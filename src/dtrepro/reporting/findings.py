"""The report's findings in words, each derived from the statistics it states: nothing here is written by hand.

- return conditioning: does the achieved return rise with the requested one, with the 95% CIs of
  neighbouring targets apart, and how steeply over the two lowest targets;
- DT against its data: the headline score as a multiple of the data's mean episode, and whether it
  passes the data's best episode (stitching: doing better than every episode it saw);
- context length: the headline K against the shortest, their difference with a bootstrap 95% CI;
- checkpoints: where `best.pt` is `last.pt` for every seed, the report says so once.
"""

from __future__ import annotations


def _return_ci(row: dict, refs: tuple[float, float]) -> tuple[float, float]:
    """The 95% CI of a row's achieved return (its score CI, mapped back through the normalisation)."""
    low, high = row["normalized_score_ci95_low"], row["normalized_score_ci95_high"]
    ref_min, ref_max = refs
    return ref_min + low / 100 * (ref_max - ref_min), ref_min + high / 100 * (ref_max - ref_min)


def conditioning(rows: list[dict], refs: tuple[float, float]) -> str:
    """`rows`: one checkpoint's rows at the headline K, one per target."""
    rows = sorted(rows, key=lambda r: r["target"])
    if len(rows) < 2:
        return "Return conditioning: one target only, nothing to compare."
    steps = []
    for lower, upper in zip(rows, rows[1:], strict=False):
        rises = upper["return_mean"] > lower["return_mean"]
        apart = _return_ci(upper, refs)[0] > _return_ci(lower, refs)[1]
        steps.append((lower["target"], upper["target"], rises, apart))
    separated = [s for s in steps if s[3]]
    if len(separated) == len(steps):
        verdict = "yes — the 95% CIs separate at every step"
    elif all(s[2] for s in steps):
        closed = ", ".join(f"{a:g}→{b:g}" for a, b, _, apart in steps if not apart)
        verdict = f"in the means, but the 95% CIs overlap at {closed}"
    elif any(s[2] and s[3] for s in steps):
        verdict = "partly — " + "; ".join(
            f"{a:g}→{b:g} {'rises, CIs apart' if r and ap else 'rises, CIs overlap' if r else 'does not rise'}"
            for a, b, r, ap in steps
        )
    else:
        verdict = "no — asking for more does not get more"
    achieved = " / ".join(f"{r['return_mean']:.0f}" for r in rows)
    targets = " / ".join(f"{r['target']:g}" for r in rows)
    slope = (rows[1]["return_mean"] - rows[0]["return_mean"]) / (rows[1]["target"] - rows[0]["target"])
    return (
        f"Achieved return rises with the requested return: {verdict} (targets {targets}: achieved {achieved}; "
        f"slope of achieved against requested return over [{rows[0]['target']:g}, {rows[1]['target']:g}]: "
        f"{slope:.2f})."
    )


def against_data(row: dict, data_mean: float, data_best: float) -> str:
    """`row`: the headline row; `data_*`: the data's mean and best episode scores."""
    score = row["normalized_score_mean"]
    ratio = (
        f"{score / data_mean:.1f}× the mean episode ({data_mean:.1f})"
        if data_mean > 0
        else (f"{score:.1f} against a mean episode of {data_mean:.1f}")
    )
    best = (
        "above"
        if row["normalized_score_ci95_low"] > data_best
        else ("below" if row["normalized_score_ci95_high"] < data_best else "level with")
    )
    return f"DT vs its data: {score:.1f}, {ratio}, {best} the best episode ({data_best:.1f})."


def context(k0: int, k1: int, diff: float, low: float, high: float, p: float | None, seeds: int) -> str:
    """The verdict is the seeds': Welch's t-test over the training seeds' mean scores (`p`, from
    `stats.seed_test`), decided at p < 0.05. The interval [low, high] resamples the episodes of these seeds' models
    (their evaluation noise) and is said as such, never as the verdict."""
    episodes = f"95% CI over episodes, these {seeds} seeds' models fixed: [{low:.1f}, {high:.1f}]"
    if p is None:
        verdict = f"{seeds} seed(s) cannot decide an effect on training"
    elif p < 0.05:
        verdict = f"across the {seeds} training seeds' means, Welch's t-test p = {p:.3f}: decided"
    else:
        verdict = (
            f"across the {seeds} training seeds' means, Welch's t-test p = {p:.2f}: {seeds} seeds do not decide it"
        )
    return f"K={k0} vs K={k1}: difference {diff:.1f}; {verdict} ({episodes})."


def same_checkpoints(per_seed: list[dict], k: int) -> bool:
    """Whether `best.pt` is `last.pt` (saved at the same step) for every seed at context length `k`."""
    return all(p["best_step"] == p["last_step"] for p in per_seed if p["context_len"] == k)
