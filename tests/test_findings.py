"""The report's findings in words come from its numbers: each verdict flips when the numbers do."""

from __future__ import annotations

import numpy as np
import pytest

from dtrepro.evaluation.stats import difference_ci, seed_test
from dtrepro.reporting.findings import against_data, conditioning, context, same_checkpoints

REFS = (0.0, 100.0)  # returns equal scores: the CIs read the same on both scales


def row(target, mean, low, high):
    return {
        "target": target,
        "return_mean": mean,
        "normalized_score_mean": mean,
        "normalized_score_ci95_low": low,
        "normalized_score_ci95_high": high,
    }


def test_conditioning_says_yes_only_when_every_step_separates():
    apart = [row(400, 20, 19, 21), row(1800, 80, 79, 81), row(3600, 85, 84, 86)]
    text = conditioning(apart, REFS)
    assert "yes — the 95% CIs separate at every step" in text and "slope" in text
    assert "over [400, 1800]: 0.04" in text  # (80 - 20) / 1400 in these units
    overlapping = [row(400, 20, 19, 21), row(1800, 80, 79, 86), row(3600, 85, 84, 86)]
    assert "CIs overlap at 1800→3600" in conditioning(overlapping, REFS)
    flat = [row(400, 50, 45, 55), row(1800, 49, 44, 54), row(3600, 48, 43, 53)]
    assert "no — asking for more does not get more" in conditioning(flat, REFS)
    mixed = [row(400, 20, 19, 21), row(1800, 80, 79, 81), row(3600, 60, 59, 61)]
    assert "partly" in conditioning(mixed, REFS) and "1800→3600 does not rise" in conditioning(mixed, REFS)


def test_dt_against_its_data_reads_the_ratio_and_the_best_episode():
    assert against_data(row(3600, 84.0, 83.0, 85.0), 40.0, 91.7) == (
        "DT vs its data: 84.0, 2.1× the mean episode (40.0), below the best episode (91.7)."
    )
    assert "above the best episode" in against_data(row(3600, 95.0, 93.0, 97.0), 40.0, 91.7)
    assert "level with the best episode" in against_data(row(3600, 91.0, 89.0, 93.0), 40.0, 91.7)


def test_a_difference_is_significant_only_when_its_interval_leaves_zero():
    rng = np.random.default_rng(0)
    a = [rng.normal(60, 2, 20) for _ in range(3)]
    shifted = [s - 10 for s in a]
    diff, low, high = difference_ci(a, shifted, 2000, 0)
    assert diff == pytest.approx(10) and 9 < low < 10 < high < 11
    diff, low, high = difference_ci(a, [s.copy() for s in a], 2000, 0)
    assert diff == 0 and low < 0 < high


def test_the_k_verdict_is_the_seeds_welch_test_checked_by_hand():
    """Seed means 1, 2, 3 against 4, 5, 6: variances 1 and 1, se = sqrt(1/3 + 1/3) = 0.8165, t = -3.674,
    Welch's df = (2/3)^2 / (2 (1/3)^2 / 2) = 4, two-sided p = 2 P(T_4 > 3.674) = 0.0213 (a t table)."""
    seeds = lambda means: [np.full(20, m, dtype=float) + np.linspace(-0.1, 0.1, 20) for m in means]  # noqa: E731
    p = seed_test(seeds([1, 2, 3]), seeds([4, 5, 6]))
    assert p == pytest.approx(0.0213, abs=5e-4)
    assert seed_test(seeds([1, 2, 3]), seeds([1.5, 2.5, 3.5])) == pytest.approx(0.573, abs=5e-3)  # t = -0.612, df 4
    assert seed_test(seeds([1]), seeds([2])) is None  # one seed a side: no test
    # the episode interval can exclude zero while three seeds do not decide: the verdict is the seeds'
    said = context(20, 1, 2.9, 2.0, 3.9, 0.13, 3)
    assert said == (
        "K=20 vs K=1: difference 2.9; across the 3 training seeds' means, Welch's t-test p = 0.13: 3 seeds do not "
        "decide it (95% CI over episodes, these 3 seeds' models fixed: [2.0, 3.9])."
    )
    assert "p = 0.021: decided" in context(20, 1, 3.0, 2.0, 4.0, p, 3)
    assert "1 seed(s) cannot decide" in context(20, 1, 3.0, 2.0, 4.0, None, 1)


def test_best_is_last_is_said_per_context_length():
    per_seed = [
        {"context_len": 20, "last_step": 3000, "best_step": 3000},
        {"context_len": 20, "last_step": 3000, "best_step": 3000},
        {"context_len": 1, "last_step": 3000, "best_step": 1500},
    ]
    assert same_checkpoints(per_seed, 20) and not same_checkpoints(per_seed, 1)
