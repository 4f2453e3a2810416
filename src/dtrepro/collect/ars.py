"""Augmented Random Search (Mania, Guy and Recht, 2018, "V2-t"): a linear behaviour policy, fast on a CPU.

The policy is a = clip(M (s - mu) / sigma), with mu and sigma the running mean and
standard deviation of every state visited. Each iteration perturbs M along
`directions` random matrices in both signs, runs one episode per perturbation,
and steps along the `top` directions with the best returns, scaled by the
standard deviation of those returns. Hopper pays 1 per step alive; training
subtracts `reward_shift` from each reward so that standing still is not a
local optimum (evaluation and data use the env's own reward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dtrepro.agent.envs import make_env


@dataclass
class LinearPolicy:
    """a = clip(weights @ (obs - mean) / std, -1, 1), optionally with Gaussian exploration noise."""

    weights: np.ndarray  # (act_dim, obs_dim)
    mean: np.ndarray  # (obs_dim,)
    std: np.ndarray  # (obs_dim,)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.weights @ ((obs - self.mean) / self.std), -1.0, 1.0)

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "LinearPolicy":
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("weights", "mean", "std")))


@dataclass
class RunningStats:
    """Welford's running mean and variance of the states visited."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def update(self, batch: np.ndarray) -> None:
        if self.count == 0:
            self.mean, self.m2 = np.zeros(batch.shape[1]), np.zeros(batch.shape[1])
        n = len(batch)
        delta = batch.mean(axis=0) - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch.var(axis=0) * n + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.maximum(np.sqrt(self.m2 / self.count), 1e-2)


@dataclass(frozen=True)
class ARSConfig:
    """ARS's settings (from params.yaml's collect section: `CollectParams.ars`)."""

    directions: int
    top: int
    step_size: float
    noise: float
    reward_shift: float
    max_episode_steps: int


def episode(env, policy: LinearPolicy, seed: int, shift: float, record: list | None = None):
    """One episode, to its termination or its env's time limit: (shifted return, true return, visited states).

    With `record` (a list), the episode's transitions are appended to it in D4RL's layout (`transitions`).
    """
    obs, _ = env.reset(seed=seed)
    states, shifted, total, done = [], 0.0, 0.0, False
    rows = [] if record is not None else None
    while not done:
        states.append(obs)
        qpos, qvel = env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy()
        action = policy.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        if rows is not None:
            rows.append((obs, action, reward, next_obs, terminated, truncated and not terminated, qpos, qvel))
        total += reward
        shifted += reward - shift
        done = terminated or truncated
        obs = next_obs
    if rows is not None:
        record.append(transitions(rows))
    return shifted, total, np.array(states)


_ENVS: dict = {}  # this process's envs, one per (env id, step limit), kept between episodes


def seeded_episode(job: tuple) -> tuple[float, float, np.ndarray, dict | None]:
    """`episode` as a job for `worker_map`: (env id, step limit, policy, seed, shift, record?) -> (shifted
    return, true return, visited states, the transitions or None). A reset with the seed fixes the episode,
    whatever ran before in the same env."""
    env_id, max_episode_steps, policy, seed, shift, keep = job
    key = (env_id, max_episode_steps)
    env = _ENVS[key] if key in _ENVS else _ENVS.setdefault(key, make_env(env_id, max_episode_steps))
    record = [] if keep else None
    shifted, total, states = episode(env, policy, seed, shift, record)
    return shifted, total, states, record[0] if keep else None


def transitions(rows: list[tuple]) -> dict[str, np.ndarray]:
    """One episode's rows as D4RL's arrays."""
    obs, action, reward, next_obs, terminal, timeout, qpos, qvel = zip(*rows, strict=True)
    return {
        "observations": np.array(obs, np.float32),
        "actions": np.array(action, np.float32),
        "rewards": np.array(reward, np.float32),
        "next_observations": np.array(next_obs, np.float32),
        "terminals": np.array(terminal, bool),
        "timeouts": np.array(timeout, bool),
        "infos/qpos": np.array(qpos, np.float32),
        "infos/qvel": np.array(qvel, np.float32),
    }


class ARS:
    """The training state; `iterate()` runs one ARS update and reports its progress."""

    def __init__(self, env_id: str, config: ARSConfig, seed: int | list[int], map_: Callable = map):
        env = make_env(env_id, config.max_episode_steps)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        self.env_id, self.config, self.map = env_id, config, map_  # map_: where the episodes run (`worker_map`)
        self.rng = np.random.default_rng(seed)
        self.weights = np.zeros((act_dim, obs_dim))
        self.stats = RunningStats()
        self.stats.update(np.zeros((1, obs_dim)))
        self.env_steps = 0

    @property
    def policy(self) -> LinearPolicy:
        return LinearPolicy(self.weights.copy(), self.stats.mean.copy(), self.stats.std.copy())

    def iterate(self, record: list | None = None) -> float:
        """One update; returns the mean true return of this iteration's perturbed episodes.

        With `record` (a list), each perturbed episode's transitions are appended to it: ARS's replay buffer.
        """
        c = self.config
        deltas = self.rng.standard_normal((c.directions, *self.weights.shape))
        seeds = self.rng.integers(0, 2**31 - 1, size=(c.directions, 2))
        mean, std = self.stats.mean.copy(), self.stats.std.copy()
        policies = [
            LinearPolicy(self.weights + sign * c.noise * deltas[k], mean, std)
            for k in range(c.directions)
            for sign in (1.0, -1.0)
        ]
        episodes = list(self.run(policies, seeds.ravel(), c.reward_shift, record is not None))
        shifted = np.array([e[0] for e in episodes]).reshape(c.directions, 2)
        true_returns, visited = [e[1] for e in episodes], [e[2] for e in episodes]
        self.env_steps += sum(len(states) for states in visited)
        if record is not None:
            record.extend(e[3] for e in episodes)
        best = np.argsort(-shifted.max(axis=1))[: c.top]
        spread = shifted[best].std() or 1.0
        step = np.tensordot(shifted[best, 0] - shifted[best, 1], deltas[best], axes=1)
        self.weights = self.weights + c.step_size / (c.top * spread) * step
        self.stats.update(np.concatenate(visited))
        return float(np.mean(true_returns))

    def evaluate(self, episodes: int, seed: int) -> np.ndarray:
        """True returns of the current (noise-free) policy over `episodes` seeded episodes."""
        runs = self.run([self.policy] * episodes, [seed + i for i in range(episodes)], 0.0, False)
        return np.array([total for _, total, _, _ in runs])

    def run(self, policies: list[LinearPolicy], seeds, shift: float, keep: bool):
        """The episodes of `policies`, one seed each, through `self.map` (in order)."""
        limit = self.config.max_episode_steps
        jobs = [(self.env_id, limit, p, int(s), shift, keep) for p, s in zip(policies, seeds, strict=True)]
        return self.map(seeded_episode, jobs)
