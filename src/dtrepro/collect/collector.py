"""Make a D4RL-style dataset offline, of the kind its name says, the way D4RL made that kind.

ARS trains a linear behaviour policy on the CPU, evaluated after every iteration on
the same seeded episodes. Its "medium" policy is the first whose mean D4RL-normalised
score lies in [band_low, band_high] (D4RL's medium: about a third of expert); its
"expert" policy is the first in [expert_band_low, expert_band_high]; a band takes only a
policy whose evaluation episodes agree (`max_spread`), and bands fill in whatever order
ARS meets them (`train_behaviour`). Policies act with Gaussian exploration noise (`action_noise`). The kinds (Fu et al.,
2020, D4RL, section 5):

- random: `steps` rows of uniformly random actions;
- medium: `steps` rows of the medium policy;
- medium-replay: every episode ARS ran while it trained, up to the medium stop (D4RL's
  replay buffer of the medium agent's training); as many rows as that took;
- medium-expert: `steps` rows of the medium policy, then `steps` of the expert one;
- expert: `steps` rows of the expert policy;
- mixed (not one of D4RL's): `steps` rows of each of the policies ARS passes through on its way,
  the first it meets in each band of `mixed_bands`, in the bands' order -- data of several behaviour qualities, so that
  the return asked for picks a behaviour (the return-conditioning study of `make demo`).

One seed fixes everything, so the same seed gives a byte-identical file on machines with the same
numeric kernels and library versions (`dtrepro.runtime.threads`, `provenance`).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dtrepro import __version__
from dtrepro.agent.envs import make_env
from dtrepro.collect.ars import ARS, ARSConfig, LinearPolicy
from dtrepro.collect.provenance import provenance, versions
from dtrepro.collect.rollout import rollout
from dtrepro.collect.workers import worker_map
from dtrepro.data.checksum import file_sha256, write_sidecar
from dtrepro.data.d4rl import D4RLData, as_v0_layout, write_d4rl
from dtrepro.data.flags import episode_ends, episode_stats
from dtrepro.params import CollectParams
from dtrepro.registry.scores import normalized_score, return_for_score
from dtrepro.runtime.atomic import atomic_output, write_json
from dtrepro.runtime.errors import DtreproError
from dtrepro.runtime.progress import progress
from dtrepro.runtime.threads import unpinned_kernels, usable_cpus

ARS_NAME = "ARS (linear policy, observation normalisation, top-b directions)"


def ars_config(params: CollectParams) -> ARSConfig:
    """ARS's settings from the collect section."""
    return ARSConfig(
        directions=params.directions,
        top=params.top,
        step_size=params.step_size,
        noise=params.exploration,
        reward_shift=params.reward_shift,
        max_episode_steps=params.max_episode_steps,
    )


@dataclass
class Behaviour:
    policy: LinearPolicy
    returns: np.ndarray  # evaluation returns of the policy
    iterations: int  # ARS iterations it took, from the start (every run)
    env_steps: int  # env steps of training it took, from the start (every run)
    run: int  # the ARS run that found it: 0, or the number of the fresh start (`train_behaviour`)


def train_behaviour(
    params: CollectParams, bands: list[tuple[float, float]], record: list | None = None, map_: Callable = map
) -> list[Behaviour]:
    """Train with ARS until it has met a policy in every band; one `Behaviour` per band, in the bands' order.

    A band takes the first policy whose evaluation lies in it: mean score within the band, and the scores of
    its evaluation episodes spread (std) by at most `max_spread`, a policy that behaves alike from episode to
    episode. The bands fill in whatever order ARS meets them: its score jumps (on Hopper from 26 to 82 in one
    iteration), and a band sought only once the one below it is filled is passed over and then waited for,
    millions of steps on some processors. A run of ARS that has not filled every band after `restart_steps`
    env steps is stuck (past a band, or on a plateau below one): a fresh run, seeded from (`seed`, its
    number), starts from scratch and fills the bands still empty. A clear error if `max_steps` runs out
    first. With `record`, every training episode of the run that finds the first band's policy, up to it, is
    appended to it (`ARS.iterate`; one agent's replay buffer). `map_` runs the episodes (`worker_map`).
    """
    env = params.env_id
    eval_seed = params.seed + 1_000_000
    limits = [(return_for_score(low, env), return_for_score(high, env)) for low, high in bands]
    found: list[Behaviour | None] = [None] * len(bands)
    closest: list[tuple[float, float] | None] = [None] * len(bands)  # per band: the nearest (score, spread) met
    bar = progress(total=params.max_steps, desc="behaviour policy (ARS)", unit="step", unit_scale=True)
    best, iteration, spent, run = -np.inf, 0, 0, 0  # spent: env steps of the earlier runs
    ars = ARS(env, ars_config(params), params.seed, map_)
    with bar:
        while True:
            returns = ars.evaluate(params.eval_episodes, eval_seed)
            scores = normalized_score(returns, env)
            score, spread = float(scores.mean()), float(scores.std())
            best = max(best, score)
            for i, ((low, high), band) in enumerate(zip(limits, bands, strict=True)):
                if found[i] is None and low <= returns.mean() <= high and spread <= params.max_spread:
                    found[i] = Behaviour(ars.policy, returns, iteration, spent + ars.env_steps, run)
                elif found[i] is None and (closest[i] is None or _gap(score, band) < _gap(closest[i][0], band)):
                    closest[i] = (score, spread)
            if found[0] is not None:
                record = None
            filled = sum(b is not None for b in found)
            bar.set_postfix(score=f"{score:.1f}±{spread:.1f}", bands=f"{filled}/{len(bands)}", run=run)
            if filled == len(bands):
                return found
            if spent + ars.env_steps >= params.max_steps:
                raise DtreproError(ran_out(params, bands, found, closest, iteration, best, run + 1))
            if ars.env_steps >= params.restart_steps:
                spent, run = spent + ars.env_steps, run + 1
                ars = ARS(env, ars_config(params), [params.seed, run], map_)
                if record is not None:
                    record.clear()
                continue
            before = ars.env_steps
            ars.iterate(record)
            iteration += 1
            remaining = params.max_steps - spent
            bar.update(min(ars.env_steps, remaining) - min(before, remaining))


def _gap(score: float, band: tuple[float, float]) -> float:
    return max(band[0] - score, score - band[1], 0.0)


def ran_out(
    params: CollectParams, bands: list, found: list, closest: list, iterations: int, best: float, runs: int
) -> str:
    """The paragraph for a search whose budget ran out: each band missed and the nearest the search came to it."""
    missed = "; ".join(
        f"[{low:g}, {high:g}] (nearest: {near[0]:.1f} ± {near[1]:.1f})" if near else f"[{low:g}, {high:g}]"
        for (low, high), b, near in zip(bands, found, closest, strict=True)
        if b is None
    )
    met = ", ".join(
        f"[{low:g}, {high:g}] after {b.env_steps:,} steps" for (low, high), b in zip(bands, found, strict=True) if b
    )
    return (
        f"The behaviour policy did not reach the score band {missed} within collect.max_steps={params.max_steps} "
        f"environment steps on {params.env_id} ({iterations} ARS iterations in {runs} run(s) of at most "
        f"collect.restart_steps={params.restart_steps}, collect.seed={params.seed}; best score "
        f"{best:.1f}{'; met ' + met if met else ''}). A band takes a policy whose mean score over "
        f"collect.eval_episodes={params.eval_episodes} episodes lies in it, spread (std) by at most "
        f"collect.max_spread={params.max_spread:g}. Raise collect.max_steps, widen the band or collect.max_spread, "
        "lower collect.restart_steps (more fresh ARS runs), or try another collect.seed; no dataset was written."
    )


@dataclass
class Noisy:
    """The policy with Gaussian action noise: returns (clipped action, log-probability of the unclipped sample).
    A picklable object rather than a closure, so that a worker process can roll it out."""

    policy: LinearPolicy
    sigma: float
    seed: int

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.log_norm = -np.log(self.sigma) - 0.5 * np.log(2 * np.pi)

    def __call__(self, obs):
        mean = self.policy.act(obs)
        eps = self.rng.standard_normal(mean.shape)
        log_prob = float(np.sum(self.log_norm - 0.5 * eps**2))
        return np.clip(mean + self.sigma * eps, -1.0, 1.0), log_prob


@dataclass
class UniformRandom:
    """Uniformly random actions in [-1, 1] (D4RL's random kind; every env here has those bounds)."""

    act_dim: int
    seed: int

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, obs):
        return self.rng.uniform(-1.0, 1.0, self.act_dim)


def rollout_job(job: tuple) -> dict[str, np.ndarray]:
    """`rollout` as a job for `worker_map`: (env id, actor, rows, seed, step limit) -> the arrays."""
    env_id, actor, rows, seed, max_episode_steps = job
    return rollout(env_id, actor, rows, seed, max_episode_steps).arrays


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def policy_stops(params: CollectParams) -> list[tuple[str, tuple[float, float]]]:
    """The behaviour policies the kind needs, by name, each with the score band that stops ARS on it."""
    medium = ("medium", (params.band_low, params.band_high))
    expert = ("expert", (params.expert_band_low, params.expert_band_high))
    return {
        "random": [],
        "medium": [medium],
        "medium-replay": [medium],
        "medium-expert": [medium, expert],
        "expert": [expert],
        "mixed": [(f"policy{i}", tuple(band)) for i, band in enumerate(params.mixed_bands, 1)],
    }[params.kind]


def collect(params: CollectParams, workers: int | None = None) -> tuple[D4RLData, dict[str, Behaviour], float]:
    """Make the dataset of `params.kind`; returns (dataset, the behaviour policies by name, rollout steps per s).

    Episodes and rollouts run in `workers` processes (default: one per core); the data does not depend on it.
    """
    if why := unpinned_kernels():
        warnings.warn(why, stacklevel=2)
    kind, stops = params.kind, policy_stops(params)
    replay: list[dict[str, np.ndarray]] = []
    bands = [band for _, band in stops]
    with worker_map(workers) as map_:
        found = train_behaviour(params, bands, replay if kind == "medium-replay" else None, map_) if stops else []
        behaviours = {name: b for (name, _), b in zip(stops, found, strict=True)}
        start = time.perf_counter()
        if kind == "medium-replay":
            parts = [concatenate(replay)]
        else:
            actors = (
                [UniformRandom(make_env(params.env_id, 1).action_space.shape[0], params.seed + 2_000_000)]
                if kind == "random"
                else [Noisy(b.policy, params.action_noise, params.seed + 2_000_000 + i) for i, b in enumerate(found)]
            )
            jobs = [
                (params.env_id, actor, params.steps, params.seed + 3_000_000 + i, params.max_episode_steps)
                for i, actor in enumerate(actors)
            ]
            parts = list(progress(map_(rollout_job, jobs), total=len(jobs), desc="rollouts", unit="policy"))
    rows = sum(len(p["rewards"]) for p in parts)
    rate = rows / (time.perf_counter() - start)
    keys = set.intersection(*(set(p) for p in parts))  # random actions have no log-probabilities
    data = D4RLData(concatenate([{k: p[k] for k in sorted(keys)} for p in parts]))
    data.metadata.update(
        {
            "source": "collect",
            "dataset": params.dataset,
            "kind": kind,
            "algorithm": "uniform random actions" if kind == "random" else ARS_NAME,
            "env_id": params.env_id,
            "seed": params.seed,
            "action_noise": params.action_noise,
            **{f"{name}_return_mean": float(b.returns.mean()) for name, b in behaviours.items()},
            **{
                f"{name}_normalized_mean": float(normalized_score(b.returns, params.env_id).mean())
                for name, b in behaviours.items()
            },
            "version/dtrepro": __version__,
            **versions(),
        }
    )
    if params.layout == "v0":
        data = as_v0_layout(data)
    return data, behaviours, rate


def source_metrics(data: D4RLData, behaviours: dict[str, Behaviour], params: CollectParams) -> dict:
    ends = episode_ends(data.arrays["terminals"], data.arrays.get("timeouts", np.zeros(data.rows, bool)))
    episodes = episode_stats(data.arrays["rewards"], ends, prefix="dataset_episode")
    metrics = {"source": "collect", "dataset": params.dataset, "kind": params.kind, "env_id": params.env_id}
    for name, b in behaviours.items():
        scores = normalized_score(b.returns, params.env_id)
        metrics.update(
            {
                f"{name}_return_mean": float(b.returns.mean()),
                f"{name}_return_std": float(b.returns.std()),
                f"{name}_normalized_mean": float(scores.mean()),
                f"{name}_normalized_std": float(scores.std()),
                f"{name}_eval_episodes": len(b.returns),
                f"{name}_iterations": b.iterations,
                f"{name}_env_steps": b.env_steps,
                f"{name}_ars_run": b.run,
            }
        )
    return {
        **metrics,
        "rows": data.rows,
        "dataset_episodes": len(ends),
        **episodes,
        "dataset_normalized_mean": float(normalized_score(episodes["dataset_episode_return_mean"], params.env_id)),
        "dataset_normalized_max": float(normalized_score(episodes["dataset_episode_return_max"], params.env_id)),
    }


def collect_to_files(
    params: CollectParams, output: str | os.PathLike, policy_path: str | os.PathLike, metrics_path: str | os.PathLike
) -> dict:
    """Collect and write the dataset (with its .sha256), the behaviour policy and the metrics, all atomically.
    The metrics say what made the data besides its params: the data's SHA-256 beside the processor, its numeric
    kernels, the library versions and the worker processes (`provenance`)."""
    workers = usable_cpus()
    data, behaviours, rate = collect(params, workers)
    metrics = source_metrics(data, behaviours, params)
    with atomic_output(output) as tmp:
        write_d4rl(tmp, data)
        digest = file_sha256(tmp)
        metrics.update(sha256=digest, **provenance(workers))
        write_json(
            policy_path,
            {
                "source": "collect",
                "algorithm": "ARS",
                "params": params.model_dump(),
                "policies": {name: b.policy.to_dict() for name, b in behaviours.items()},
            },
        )
        write_json(metrics_path, metrics)
        write_sidecar(output, digest)
    return {**metrics, "rollout_steps_per_s": rate}
