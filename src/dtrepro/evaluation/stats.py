"""Summary statistics of scores: bootstrap intervals and the evaluation metrics of a set of episodes."""

from __future__ import annotations

import numpy as np
import scipy.stats

from dtrepro.registry.scores import normalized_score


def bootstrap_ci(samples: list[np.ndarray], resamples: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the samples' means (scipy.stats.bootstrap).

    With one sample (one model's episodes) it is the interval of the mean score.
    With several (one per training seed) each is resampled on its own: the interval
    of the across-seed mean that keeps every seed's share of the episodes.
    """
    samples = [np.asarray(s, dtype=np.float64) for s in samples]
    if all(np.ptp(s) == 0 for s in samples):  # no spread to resample
        mean = float(np.mean([s.mean() for s in samples]))
        return mean, mean
    result = scipy.stats.bootstrap(
        samples,
        lambda *xs, axis: np.mean([x.mean(axis=axis) for x in xs], axis=0),
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def score_summary(
    returns: np.ndarray, lengths: np.ndarray, env_id: str, resamples: int, seed: int, refs: tuple | None = None
) -> dict[str, float]:
    """The evaluation metrics of one set of episodes: returns, normalised scores (`refs`, else D4RL's) with a 95%
    CI, lengths."""
    returns = np.asarray(returns, dtype=np.float64)
    scores = normalized_score(returns, env_id, refs)
    low, high = bootstrap_ci([scores], resamples, seed)
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "normalized_score_mean": float(scores.mean()),
        "normalized_score_std": float(scores.std()),
        "normalized_score_ci95_low": low,
        "normalized_score_ci95_high": high,
        "length_mean": float(np.mean(lengths)),
        "episodes": len(returns),
    }


def difference_ci(
    a: list[np.ndarray], b: list[np.ndarray], resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """The difference of two across-seed means (`a` minus `b`, each a list of per-seed episode scores) and its
    percentile bootstrap interval, every seed's episodes resampled on their own (as `bootstrap_ci`)."""
    rng = np.random.default_rng(seed)

    def draws(samples: list[np.ndarray]) -> np.ndarray:
        means = [np.asarray(s, np.float64)[rng.integers(0, len(s), (resamples, len(s)))].mean(axis=1) for s in samples]
        return np.mean(means, axis=0)

    diff = float(np.mean([np.mean(s) for s in a]) - np.mean([np.mean(s) for s in b]))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws(a) - draws(b), [tail, 100 - tail])
    return diff, float(low), float(high)


def seed_test(a: list[np.ndarray], b: list[np.ndarray]) -> float | None:
    """Welch's t-test of the per-seed mean scores of `a` against `b` (each a list of per-seed episode scores): the
    two-sided p-value, the training seed being the unit of replication; None with fewer than two seeds a side or
    no spread at all."""
    ma, mb = ([float(np.mean(s)) for s in x] for x in (a, b))
    if min(len(ma), len(mb)) < 2 or (np.ptp(ma) == 0 and np.ptp(mb) == 0):
        return None
    return float(scipy.stats.ttest_ind(ma, mb, equal_var=False).pvalue)
