"""Normalised scores: 100 * (return - random) / (expert - random).

The reference returns are D4RL's constants for the env family, unless the data bring their own
(a Minari dataset's `ref_min_score`/`ref_max_score`, carried in the file's metadata into every
checkpoint): `reference_scores` says which.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dtrepro.registry.datasets import family

D4RL = "d4rl"  # the reference scores' source when they are D4RL's constants


def reference_scores(metadata: Mapping, env_id: str) -> tuple[float, float, str]:
    """(random, expert, source) for data with this metadata: the data's own where they carry them, else D4RL's."""
    if metadata.get("ref_min_score") is not None and metadata.get("ref_max_score") is not None:
        source = str(metadata.get("ref_scores_source") or "data")
        return float(metadata["ref_min_score"]), float(metadata["ref_max_score"]), source
    return (*family(env_id).ref_scores, D4RL)


def normalized_score(returns, env_id: str, refs: tuple | None = None):
    """`returns` in points: 0 the random policy's, 100 the expert's, of `refs` or else D4RL's for `env_id`'s family
    (a dataset name or an env id; every caller names its env: no env is anyone's default)."""
    ref_min, ref_max = refs[:2] if refs else family(env_id).ref_scores
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def return_for_score(score: float, env_id: str) -> float:
    """The return that has normalised score `score` (the inverse of `normalized_score`), with D4RL's constants."""
    ref_min, ref_max = family(env_id).ref_scores
    return ref_min + score / 100.0 * (ref_max - ref_min)
