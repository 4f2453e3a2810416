"""Many copies of one gymnasium env stepped together, spread over threads.

MuJoCo releases Python's GIL while it simulates, so the envs of one lockstep
timestep can step in parallel on all cores while the forward pass waits for
them. Each env is stepped exactly as it would be alone, so results do not
depend on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from dtrepro.agent.envs import make_env
from dtrepro.runtime.threads import usable_cpus


class EnvBatch:
    def __init__(self, env_id: str, n: int, max_episode_steps: int, threads: int | None = None):
        self.envs = [make_env(env_id, max_episode_steps) for _ in range(n)]
        self.obs_dim = self.envs[0].observation_space.shape[0]
        self.act_dim = self.envs[0].action_space.shape[0]
        self.threads = max(1, min(threads or usable_cpus(), n))
        self._pool = ThreadPoolExecutor(self.threads, "env") if self.threads > 1 else None

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Reset env i with seeds[i]; the first observations (n, obs_dim)."""
        return np.stack([env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds, strict=True)])

    def step(self, which: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step env which[j] with actions[j]; the observations, rewards and `ended` flags (terminated or
        truncated at the time limit), row j each."""
        obs = np.empty((len(which), self.obs_dim))
        rewards, ended = np.empty(len(which)), np.empty(len(which), dtype=bool)

        def step_rows(rows: range) -> None:
            for j in rows:
                obs[j], rewards[j], terminated, truncated, _ = self.envs[which[j]].step(actions[j])
                ended[j] = terminated or truncated

        if self._pool is None or len(which) < 2:
            step_rows(range(len(which)))
        else:
            n, parts = len(which), min(self.threads, len(which))
            list(self._pool.map(step_rows, (range(i * n // parts, (i + 1) * n // parts) for i in range(parts))))
        return obs, rewards, ended

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for env in self.envs:
            env.close()

    def __enter__(self) -> "EnvBatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
