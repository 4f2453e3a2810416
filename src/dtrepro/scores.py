"""D4RL-normalised scores: 100 * (return - random) / (expert - random), with D4RL's own constants."""

from __future__ import annotations

import numpy as np

from dtrepro.datasets import family


def normalized_score(returns, env_id: str = "Hopper-v4"):
    ref_min, ref_max = family(env_id).ref_scores
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def return_for_score(score: float, env_id: str = "Hopper-v4") -> float:
    """The return that has normalised score `score` (the inverse of `normalized_score`)."""
    ref_min, ref_max = family(env_id).ref_scores
    return ref_min + score / 100.0 * (ref_max - ref_min)
