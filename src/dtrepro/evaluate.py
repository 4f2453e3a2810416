"""Run a trained Decision Transformer in the env: many episodes stepped together.

`run_episodes` advances all episodes in lockstep, so at each timestep one model
forward serves every live episode, and an episode that ends leaves the batch.
`run_episodes_one_by_one` is the reference it must match exactly: each episode
alone, its padded window rebuilt from the growing history at every step, the way
the original implementation evaluates. Both reset episode i with `seeds[i]`,
start its return-to-go at `targets[i]` and lower it by each reward received, as
in the paper, and both go through `Policy`, so they do the same arithmetic.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from dtrepro.atomic import atomic_output, write_json
from dtrepro.collect.rollout import make_env
from dtrepro.device import autocast_dtype, pick_device
from dtrepro.envbatch import EnvBatch, available_cores
from dtrepro.errors import DtreproError
from dtrepro.model import DecisionTransformer, ModelConfig
from dtrepro.params import from_section
from dtrepro.scores import normalized_score
from dtrepro.stats import score_summary

MIN_ROWS = 16


@dataclass
class Policy:
    """A model with the normalisation it was trained with: all a checkpoint needs to act."""

    model: DecisionTransformer
    state_mean: np.ndarray
    state_std: np.ndarray
    return_scale: float
    amp_dtype: torch.dtype | None = None  # autocast precision of the forward; None: float32

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @functools.cached_property
    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        as_tensor = functools.partial(torch.as_tensor, dtype=torch.float32, device=self.device)
        return as_tensor(self.state_mean), as_tensor(self.state_std)

    def normalize(self, obs: np.ndarray) -> torch.Tensor:
        mean, std = self._mean_std
        return (torch.as_tensor(obs, dtype=torch.float32, device=self.device) - mean) / std

    def scaled_rewards(self, rewards: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(rewards, dtype=torch.float32, device=self.device) / self.return_scale

    @torch.no_grad()
    def act(self, states, actions, returns_to_go, timesteps, mask) -> torch.Tensor:
        """The action for the last timestep of each (left-padded) window, as float32 (B, act_dim).

        Only that action is computed (`DecisionTransformer.final_action`). It must not depend on how
        many episodes share the forward, yet BLAS libraries pick other kernels, with other rounding,
        for matrices of very few rows (MKL: fewer than 12). So the last block always computes its
        final MIN_ROWS tokens, and windows of all-zero filler are added until every other matrix
        product has at least MIN_ROWS rows; the filler's output is dropped.
        """
        b, k = states.shape[:2]
        filler = max(0, -(-MIN_ROWS // k) - b)
        window = (states, actions, returns_to_go, timesteps, mask)
        if filler:
            window = tuple(torch.cat([w, torch.zeros_like(w[:1]).expand(filler, *w.shape[1:])]) for w in window)
        ctx = torch.autocast(self.device.type, self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        with ctx:
            return self.model.final_action(*window, queries=MIN_ROWS)[:b].float()

    def check_env(self, env_id: str, obs_dim: int, act_dim: int) -> None:
        cfg = self.model.cfg
        if (cfg.state_dim, cfg.act_dim) != (obs_dim, act_dim):
            raise DtreproError(
                f"The checkpoint's model takes {cfg.state_dim}-dim states and {cfg.act_dim}-dim actions, but "
                f"{env_id} has {obs_dim}-dim observations and {act_dim}-dim actions. Evaluate it on the env it "
                f"was trained for (eval.env_id), or train on a dataset from {env_id}."
            )


@dataclass
class EpisodeResults:
    seeds: np.ndarray
    targets: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray


def env_threads(device: torch.device) -> int:
    """Threads for stepping envs: one per core when the model runs on a GPU, one in all on CPU, where
    the forward pass keeps every core busy and its OpenMP workers spin on them between passes, so
    that env threads would only compete with them."""
    return 1 if device.type == "cpu" else available_cores()


def _broadcast_targets(seeds: Sequence[int], targets: float | Sequence[float]) -> np.ndarray:
    targets = np.broadcast_to(np.asarray(targets, dtype=np.float64), (len(seeds),))
    return targets.copy()


def run_episodes(
    policy: Policy,
    env_id: str,
    seeds: Sequence[int],
    targets: float | Sequence[float],
    max_steps: int = 1000,
    progress: bool = False,
    threads: int | None = None,
) -> EpisodeResults:
    """Run one episode per seed, all together: one forward pass per timestep for all live episodes.

    The envs of a timestep step on `threads` threads, by default `env_threads(device)`.
    """
    model, device = policy.model.eval(), policy.device
    threads = threads or env_threads(device)
    cfg, n, k = model.cfg, len(seeds), model.cfg.context_len
    targets = _broadcast_targets(seeds, targets)
    # Each episode's history after K-1 rows of zero padding: the window of step t is rows t .. t+K-1.
    # The episodes start together, so a window's timesteps and padding mask are the same for all of them.
    span = k - 1 + max_steps
    states = torch.zeros(n, span, cfg.state_dim, device=device)
    actions = torch.zeros(n, span, cfg.act_dim, device=device)
    rtg = torch.zeros(n, span, device=device)
    step_of_row = torch.arange(-(k - 1), max_steps, device=device)
    timesteps, mask = step_of_row.clamp(0, cfg.max_timestep - 1), step_of_row >= 0
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    live = np.arange(n)
    rows = slice(None)  # the live episodes' rows of the buffers: all of them until one ends
    bar = tqdm(total=max_steps, desc="evaluate", unit="step", disable=not progress, mininterval=1.0, leave=False)
    with EnvBatch(env_id, n, threads) as envs:
        policy.check_env(env_id, envs.obs_dim, envs.act_dim)
        states[:, k - 1] = policy.normalize(envs.reset(seeds))
        rtg[:, k - 1] = torch.as_tensor(targets, dtype=torch.float32, device=device) / policy.return_scale
        for t in range(max_steps):
            now, window = t + k - 1, slice(t, t + k)
            act = policy.act(
                states[rows, window],
                actions[rows, window],
                rtg[rows, window],
                timesteps[window].expand(len(live), k),
                mask[window].expand(len(live), k),
            )
            actions[rows, now] = act
            obs, rewards, terminated = envs.step(live, act.cpu().numpy())
            returns[live] += rewards
            lengths[live] += 1
            bar.update(1)
            if t + 1 == max_steps or terminated.all():
                break
            still = ~terminated
            if not still.all():
                live = live[still]
                rows = torch.as_tensor(live, device=device)
            states[rows, now + 1] = policy.normalize(obs[still])
            rtg[rows, now + 1] = rtg[rows, now] - policy.scaled_rewards(rewards[still])
    bar.close()
    return EpisodeResults(np.asarray(seeds), targets, returns, lengths)


def run_episodes_one_by_one(
    policy: Policy, env_id: str, seeds: Sequence[int], targets: float | Sequence[float], max_steps: int = 1000
) -> EpisodeResults:
    """The reference: one episode after another, re-padding the growing history at every step."""
    model, device = policy.model.eval(), policy.device
    cfg, k = model.cfg, model.cfg.context_len
    targets = _broadcast_targets(seeds, targets)
    returns, lengths = np.zeros(len(seeds)), np.zeros(len(seeds), dtype=np.int64)
    for i, (seed, target) in enumerate(zip(seeds, targets, strict=True)):
        env = make_env(env_id)
        policy.check_env(env_id, env.observation_space.shape[0], env.action_space.shape[0])
        obs, _ = env.reset(seed=int(seed))
        states = policy.normalize(obs[None])
        actions = torch.zeros(0, cfg.act_dim, device=device)
        rtg = torch.as_tensor([target], dtype=torch.float32, device=device) / policy.return_scale
        timesteps = torch.zeros(1, dtype=torch.long, device=device)
        for t in range(max_steps):
            actions = torch.cat([actions, torch.zeros(1, cfg.act_dim, device=device)])
            width = min(k, t + 1)
            pad = k - width
            window = [states[-width:], actions[-width:], rtg[-width:], timesteps[-width:]]
            window = [torch.cat([torch.zeros((pad, *w.shape[1:]), dtype=w.dtype, device=device), w]) for w in window]
            mask = torch.cat([torch.zeros(pad, dtype=torch.bool), torch.ones(width, dtype=torch.bool)]).to(device)
            act = policy.act(*(w[None] for w in window), mask[None])[0]
            actions[-1] = act
            obs, reward, terminated, _, _ = env.step(act.cpu().numpy())
            returns[i] += reward
            lengths[i] += 1
            if terminated:
                break
            states = torch.cat([states, policy.normalize(obs[None])])
            rtg = torch.cat([rtg, rtg[-1:] - policy.scaled_rewards(np.array([reward]))])
            timesteps = torch.cat([timesteps, torch.full((1,), min(t + 1, cfg.max_timestep - 1), device=device)])
        env.close()
    return EpisodeResults(np.asarray(seeds), targets, returns, lengths)


def policy_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Policy, dict]:
    """Load a checkpoint (weights only, never arbitrary objects) as a ready-to-act policy."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DtreproError(f"Checkpoint {path} does not exist. Run the train stage first (dvc repro).") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise DtreproError(f"Checkpoint {path} cannot be loaded ({err}); it is damaged. Train again.") from None
    model = DecisionTransformer(ModelConfig(**ckpt["config"])).to(device)
    model.load_state_dict(ckpt["model"])
    policy = Policy(model, ckpt["state_mean"].numpy(), ckpt["state_std"].numpy(), float(ckpt["return_scale"]))
    return policy, ckpt


# -- the evaluate stage ---------------------------------------------------------------------------------

CHECKPOINTS = ("last", "best")
EPISODE_FIELDS = ("checkpoint", "step", "target", "episode", "seed", "return", "length", "normalized_score")


@dataclass(frozen=True)
class EvalParams:
    """The `eval` section of params.yaml."""

    env_id: str = "Hopper-v4"
    episodes: int = 20
    seed: int = 1000
    targets: tuple[float, ...] = (3600.0, 1800.0, 400.0)
    max_steps: int = 1000
    device: str = "auto"
    amp: bool = False
    bootstrap_resamples: int = 10_000

    @classmethod
    def from_dict(cls, section: dict) -> "EvalParams":
        params = from_section(cls, section, "eval")
        if params.episodes < 1 or params.max_steps < 1 or not params.targets:
            raise DtreproError("eval.episodes and eval.max_steps must be positive and eval.targets non-empty.")
        return replace(params, targets=tuple(float(t) for t in params.targets))

    @property
    def episode_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


def metric_key(checkpoint: str, target: float, field: str) -> str:
    """The flat metrics key of one evaluation's field, e.g. `last.target_3600.normalized_score_mean`."""
    return f"{checkpoint}.target_{target:g}.{field}"


def evaluate_checkpoints(
    checkpoint_dir: str | os.PathLike, params: EvalParams, metrics_path, episodes_path, progress: bool = True
) -> dict:
    """Evaluate `last.pt` and `best.pt` at every target; write per-episode rows (CSV) and flat metrics (JSON)."""
    device = pick_device(params.device, "eval.device")
    seeds = params.episode_seeds * len(params.targets)
    targets = np.repeat(params.targets, params.episodes)
    metrics = {"env_id": params.env_id, "episodes": params.episodes, "seed": params.seed}
    rows, done = [], {}
    for name in CHECKPOINTS:
        policy, ckpt = policy_from_checkpoint(Path(checkpoint_dir) / f"{name}.pt", device)
        policy.amp_dtype = autocast_dtype(device, params.amp)
        step = int(ckpt["step"])
        metrics.update(context_len=policy.model.cfg.context_len, train_seed=ckpt.get("train_seed"))
        metrics[f"{name}.step"] = step
        if step not in done:  # best.pt saved at the last step holds the same weights as last.pt
            done[step] = run_episodes(policy, params.env_id, seeds, targets, params.max_steps, progress)
        results = done[step]
        for target in params.targets:
            chosen = results.targets == target
            summary = score_summary(
                results.returns[chosen], results.lengths[chosen], params.env_id, params.bootstrap_resamples, params.seed
            )
            metrics.update({metric_key(name, target, k): v for k, v in summary.items()})
        scores = normalized_score(results.returns, params.env_id)
        for i in range(len(seeds)):
            row = (name, step, results.targets[i], i % params.episodes, results.seeds[i], results.returns[i])
            rows.append((*row, results.lengths[i], scores[i]))
    with atomic_output(episodes_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EPISODE_FIELDS)
        writer.writerows(rows)
    write_json(metrics_path, metrics)
    return metrics
