"""Normalised scores: 100 * (return - random) / (expert - random).

The reference returns of a D4RL dataset are D4RL's constants for its env family, always: a file's
metadata cannot change what "D4RL-normalised" means. A Minari dataset may carry its own
(`ref_min_score`/`ref_max_score`, with `ref_scores_source` "minari", carried into every checkpoint);
`reference_scores` says which were used, and every table, plot and metric names them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dtrepro.registry.datasets import family, lookup
from dtrepro.runtime.errors import DtreproError

D4RL = "d4rl"  # the reference scores' source when they are D4RL's constants
OWN_SOURCES = ("minari",)  # the sources whose datasets may carry reference scores of their own


def reference_scores(metadata: Mapping, dataset: str) -> tuple[float, float, str]:
    """(random, expert, source) for `dataset`'s data with this metadata: D4RL's constants for a D4RL dataset
    and for data that carry none; a Minari dataset's own where it carries them, checked to normalise at all."""
    known = lookup(dataset)
    low, high, source = (metadata.get(k) for k in ("ref_min_score", "ref_max_score", "ref_scores_source"))
    if known.source not in OWN_SOURCES or low is None or high is None or source == D4RL:
        return (*known.family.ref_scores, D4RL)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if source != known.source or not numbers or not high > low:
        raise DtreproError(
            f"The data of {dataset} carry reference scores that cannot normalise: ref_min_score {low!r}, "
            f"ref_max_score {high!r}, ref_scores_source {source!r} (wanted two finite returns, the expert's above "
            f"the random one's, from {known.source!r}). The file was changed or made by another tool: fetch it again "
            f"(`dvc repro --force source@{dataset}`), or remove those three metadata attributes to use D4RL's."
        )
    return float(low), float(high), source


def label(source: str) -> str:
    """How a plot's axis and a table name scores normalised with the references of `source`."""
    return "D4RL-normalised score" if source == D4RL else f"normalised score ({source}'s references)"


def normalized_score(returns, env_id: str, refs: tuple | None = None):
    """`returns` in points: 0 the random policy's, 100 the expert's, of `refs` or else D4RL's for `env_id`'s family
    (a dataset name or an env id; every caller names its env: no env is anyone's default)."""
    ref_min, ref_max = refs[:2] if refs else family(env_id).ref_scores
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def return_for_score(score: float, env_id: str) -> float:
    """The return that has normalised score `score` (the inverse of `normalized_score`), with D4RL's constants."""
    ref_min, ref_max = family(env_id).ref_scores
    return ref_min + score / 100.0 * (ref_max - ref_min)
