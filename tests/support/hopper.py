"""Real Hopper-v4 datasets for tests: simple controllers, episodes cut in every way D4RL files are."""

from __future__ import annotations

import numpy as np

from dtrepro.collect.rollout import rollout
from dtrepro.data.d4rl import D4RLData


def pd_policy(seed: int, drive: float = 0.0):
    """Hold the joints near zero (stands for 1000 steps); `drive` adds a hopping sinusoid that makes it fall."""
    rng = np.random.default_rng(seed)
    step = [0]

    def policy(obs):
        step[0] += 1
        wave = drive * np.sin(0.3 * step[0] + np.arange(3))
        return np.clip(-2.0 * obs[2:5] - 0.2 * obs[8:11] + 0.1 * rng.standard_normal(3) + wave, -1, 1)

    return policy


def random_policy(seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1, 1, 3)


def concatenate(parts: list[D4RLData]) -> D4RLData:
    return D4RLData({k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}, dict(parts[0].metadata))


def hopper_dataset() -> tuple[D4RLData, np.ndarray, np.ndarray]:
    """A v2-layout file of ~5,000 real rows and the true (terminals, timeouts) of every episode.

    It holds 1000-step time-limit episodes, terminated falls, episodes cut at odd
    lengths with a flag, and three pieces joined where an episode was cut by the
    end of its piece with no flag at all (as the trailing episode of a D4RL file is).
    """
    steady = [  # episodes cut by time limits of several lengths, each flagged as a timeout
        rollout("Hopper-v4", pd_policy(0), n, seed=i, max_episode_steps=n) for i, n in enumerate((1000, 137, 1000, 411))
    ]
    parts = [
        concatenate(steady + [rollout("Hopper-v4", pd_policy(0), 53, seed=4, max_episode_steps=1000, flag_last=False)]),
        rollout("Hopper-v4", pd_policy(1, drive=1.0), 301, seed=1, flag_last=False),
        rollout("Hopper-v4", random_policy(2), 433, seed=2, flag_last=False),
        rollout("Hopper-v4", pd_policy(3, drive=0.3), 1200, seed=3, max_episode_steps=1000, flag_last=False),
    ]
    data = concatenate(parts)
    terminals = data.arrays["terminals"].copy()
    timeouts = data.arrays["timeouts"].copy()
    cut_rows = np.cumsum([p.rows for p in parts]) - 1
    timeouts[cut_rows] = ~terminals[cut_rows]
    return data, terminals, timeouts


def without_timeouts_at(data: D4RLData, rows: np.ndarray) -> D4RLData:
    arrays = dict(data.arrays)
    arrays["timeouts"] = arrays["timeouts"].copy()
    arrays["timeouts"][rows] = False
    return D4RLData(arrays, dict(data.metadata))
