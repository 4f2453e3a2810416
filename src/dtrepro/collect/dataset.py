"""Make a D4RL-style "medium" dataset offline: train a behaviour policy into a score band, then roll it out.

D4RL's medium sets come from a policy stopped at about a third of expert
performance. Here ARS trains a linear policy on the CPU, evaluated after every
iteration on the same seeded episodes, and stops as soon as the mean
D4RL-normalised score lies in [band_low, band_high]. The policy then acts with
Gaussian exploration noise (`action_noise`) for `steps` transitions. One seed
fixes everything, so the same seed gives a byte-identical file.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator
from tqdm import tqdm

from dtrepro import __version__
from dtrepro.atomic import atomic_output, write_json
from dtrepro.collect.ars import ARS, ARSConfig, LinearPolicy
from dtrepro.collect.rollout import rollout
from dtrepro.data.checksum import file_sha256
from dtrepro.data.d4rl import D4RLData, as_v0_layout, write_d4rl
from dtrepro.data.episodes import episode_ends, episode_stats
from dtrepro.errors import DtreproError
from dtrepro.params import Params
from dtrepro.scores import normalized_score, return_for_score


class CollectParams(Params):
    """The `collect` section of params.yaml."""

    section = "collect"
    env_id: str | None  # null: data.dataset's env
    seed: Annotated[int, Field(ge=0)]
    steps: Annotated[int, Field(ge=1)]
    layout: Literal["v2", "v0"]
    band_low: Annotated[float, Field(ge=0)]
    band_high: float
    max_steps: Annotated[int, Field(ge=1)]
    eval_episodes: Annotated[int, Field(ge=1)]
    action_noise: Annotated[float, Field(gt=0)]  # the rollouts are stochastic
    max_episode_steps: Annotated[int, Field(ge=1)]
    directions: Annotated[int, Field(ge=1)]
    top: Annotated[int, Field(ge=1)]
    step_size: Annotated[float, Field(gt=0)]
    exploration: Annotated[float, Field(gt=0)]
    reward_shift: float | None  # null: the env's alive bonus

    @model_validator(mode="after")
    def _consistent(self):
        if self.band_high <= self.band_low:
            raise ValueError(f"band_low={self.band_low} and band_high={self.band_high} do not make a band")
        if self.top > self.directions:
            raise ValueError(f"top={self.top} must be at most directions={self.directions}")
        return self

    @property
    def ars(self) -> ARSConfig:
        return ARSConfig(
            directions=self.directions,
            top=self.top,
            step_size=self.step_size,
            noise=self.exploration,
            reward_shift=self.reward_shift,
            max_episode_steps=self.max_episode_steps,
        )


@dataclass
class Behaviour:
    policy: LinearPolicy
    returns: np.ndarray  # evaluation returns of the final policy
    iterations: int
    env_steps: int


def train_behaviour(params: CollectParams) -> Behaviour:
    """Train with ARS until the evaluation score enters the band; a clear error if `max_steps` runs out first."""
    ars = ARS(params.env_id, params.ars, params.seed)
    eval_seed = params.seed + 1_000_000
    low, high = return_for_score(params.band_low, params.env_id), return_for_score(params.band_high, params.env_id)
    bar = tqdm(total=params.max_steps, desc="behaviour policy (ARS)", unit="step", unit_scale=True, mininterval=1.0)
    best, iteration = -np.inf, 0
    with bar:
        while True:
            returns = ars.evaluate(params.eval_episodes, eval_seed)
            score = float(normalized_score(returns.mean(), params.env_id))
            best = max(best, score)
            bar.set_postfix(
                return_=f"{returns.mean():.0f}", score=f"{score:.1f}", band=f"{params.band_low:g}-{params.band_high:g}"
            )
            if low <= returns.mean() <= high:
                return Behaviour(ars.policy, returns, iteration, ars.env_steps)
            if ars.env_steps >= params.max_steps:
                raise DtreproError(
                    f"The behaviour policy did not reach the score band [{params.band_low:g}, {params.band_high:g}] "
                    f"within collect.max_steps={params.max_steps} environment steps ({iteration} ARS iterations; "
                    f"last score {score:.1f}, best {best:.1f}). Raise collect.max_steps, widen the band, or try "
                    f"another collect.seed; no dataset was written."
                )
            before = ars.env_steps
            ars.iterate()
            iteration += 1
            bar.update(min(ars.env_steps, params.max_steps) - min(before, params.max_steps))


def noisy(policy: LinearPolicy, sigma: float, seed: int):
    """The policy with Gaussian action noise: returns (clipped action, log-probability of the unclipped sample)."""
    rng = np.random.default_rng(seed)
    log_norm = -np.log(sigma) - 0.5 * np.log(2 * np.pi)

    def act(obs):
        mean = policy.act(obs)
        eps = rng.standard_normal(mean.shape)
        log_prob = float(np.sum(log_norm - 0.5 * eps**2))
        return np.clip(mean + sigma * eps, -1.0, 1.0), log_prob

    return act


def versions() -> dict[str, str]:
    return {f"version/{p}": importlib.metadata.version(p) for p in ("gymnasium", "mujoco", "numpy", "h5py")}


def collect(params: CollectParams) -> tuple[D4RLData, Behaviour, float]:
    """Train the behaviour policy and roll it out; returns (dataset, behaviour, rollout steps per second)."""
    behaviour = train_behaviour(params)
    start = time.perf_counter()
    data = rollout(
        params.env_id,
        noisy(behaviour.policy, params.action_noise, params.seed + 2_000_000),
        params.steps,
        seed=params.seed + 3_000_000,
        max_episode_steps=params.max_episode_steps,
        progress=True,
    )
    rate = params.steps / (time.perf_counter() - start)
    scores = normalized_score(behaviour.returns, params.env_id)
    data.metadata.update(
        {
            "source": "collect",
            "algorithm": "ARS (linear policy, observation normalisation, top-b directions)",
            "env_id": params.env_id,
            "seed": params.seed,
            "behaviour_return_mean": float(behaviour.returns.mean()),
            "behaviour_normalized_mean": float(scores.mean()),
            "action_noise": params.action_noise,
            "version/dtrepro": __version__,
            **versions(),
        }
    )
    if params.layout == "v0":
        data = as_v0_layout(data)
    return data, behaviour, rate


def source_metrics(data: D4RLData, behaviour: Behaviour, params: CollectParams) -> dict:
    scores = normalized_score(behaviour.returns, params.env_id)
    ends = episode_ends(data.arrays["terminals"], data.arrays.get("timeouts", np.zeros(data.rows, bool)))
    episodes = episode_stats(data.arrays["rewards"], ends, prefix="dataset_episode")
    return {
        "source": "collect",
        "env_id": params.env_id,
        "rows": data.rows,
        "behaviour_return_mean": float(behaviour.returns.mean()),
        "behaviour_return_std": float(behaviour.returns.std()),
        "behaviour_normalized_mean": float(scores.mean()),
        "behaviour_normalized_std": float(scores.std()),
        "behaviour_eval_episodes": len(behaviour.returns),
        "behaviour_iterations": behaviour.iterations,
        "behaviour_env_steps": behaviour.env_steps,
        "dataset_episodes": len(ends),
        **episodes,
        "dataset_normalized_mean": float(normalized_score(episodes["dataset_episode_return_mean"], params.env_id)),
    }


def collect_to_files(
    params: CollectParams, output: str | os.PathLike, policy_path: str | os.PathLike, metrics_path: str | os.PathLike
) -> dict:
    """Collect and write the dataset (with its .sha256), the behaviour policy and the metrics, all atomically."""
    data, behaviour, rate = collect(params)
    metrics = source_metrics(data, behaviour, params)
    with atomic_output(output) as tmp:
        write_d4rl(tmp, data)
        digest = file_sha256(tmp)
        write_json(
            policy_path,
            {"source": "collect", "algorithm": "ARS", "params": params.model_dump(), **behaviour.policy.to_dict()},
        )
        write_json(metrics_path, metrics)
        with atomic_output(f"{output}.sha256") as sha:
            sha.write_text(f"{digest}  {os.path.basename(output)}\n")
    return {**metrics, "sha256": digest, "rollout_steps_per_s": rate}
