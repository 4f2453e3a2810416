"""D4RL-normalised scores: 100 * (return - random) / (expert - random), with D4RL's own constants."""

from __future__ import annotations

import numpy as np

from dtrepro.errors import DtreproError

# D4RL's reference returns (d4rl/infos.py): (random policy, expert policy) per env.
REF_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def env_family(env_id: str) -> str:
    """`Hopper-v4` -> `hopper`, `hopper-medium-v2` -> `hopper`."""
    name = env_id.split("-")[0].lower()
    if name not in REF_SCORES:
        raise DtreproError(f"No D4RL reference scores for env {env_id!r}; known: {sorted(REF_SCORES)}.")
    return name


def normalized_score(returns, env_id: str = "Hopper-v4"):
    ref_min, ref_max = REF_SCORES[env_family(env_id)]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def return_for_score(score: float, env_id: str = "Hopper-v4") -> float:
    """The return that has normalised score `score` (the inverse of `normalized_score`)."""
    ref_min, ref_max = REF_SCORES[env_family(env_id)]
    return ref_min + score / 100.0 * (ref_max - ref_min)
