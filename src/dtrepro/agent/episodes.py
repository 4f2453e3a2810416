"""Run a Decision Transformer policy in its env: many episodes stepped together.

`run_episodes` advances all episodes in lockstep, so at each timestep one model
forward serves every live episode, and an episode that ends (terminated, or
truncated by the env's time limit) leaves the batch. Episode i is reset with
`seeds[i]`; its return-to-go starts at `targets[i]` and falls by each reward
received, as in the paper. Training's periodic evaluation and the evaluate stage
both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dtrepro.agent.envbatch import EnvBatch
from dtrepro.agent.policy import Policy
from dtrepro.registry.datasets import TIME_LIMIT
from dtrepro.runtime.progress import progress as progress_bar
from dtrepro.runtime.threads import usable_cpus


@dataclass
class EpisodeResults:
    seeds: np.ndarray
    targets: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray


def env_threads(device: torch.device) -> int:
    """Threads for stepping envs: one per usable CPU when the model runs on a GPU, one in all on CPU, where
    the forward pass keeps every core busy and its OpenMP workers spin on them between passes, so
    that env threads would only compete with them."""
    return 1 if device.type == "cpu" else usable_cpus()


def broadcast_targets(seeds: Sequence[int], targets: float | Sequence[float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(targets, dtype=np.float64), (len(seeds),)).copy()


def run_episodes(
    policy: Policy,
    env_id: str,
    seeds: Sequence[int],
    targets: float | Sequence[float],
    max_steps: int = TIME_LIMIT,
    progress: bool = False,
    threads: int | None = None,
    record: list | None = None,
) -> EpisodeResults:
    """Run one episode per seed, all together: one forward pass per timestep for all live episodes. `max_steps`
    is the env's time limit; the envs step on `threads` threads (`env_threads`); `record` gets each step's actions."""
    model, device = policy.model.eval(), policy.device
    threads = threads or env_threads(device)
    cfg, n, k = model.cfg, len(seeds), model.cfg.context_len
    targets = broadcast_targets(seeds, targets)
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
    bar = progress_bar(total=max_steps, desc="evaluate", unit="step", shown=progress, leave=False)
    with EnvBatch(env_id, n, max_steps, threads) as envs:
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
            taken = act.cpu().numpy()
            if record is not None:
                record.append(taken)
            obs, rewards, ended = envs.step(live, taken)
            returns[live] += rewards
            lengths[live] += 1
            bar.update(1)
            if ended.all():
                break
            still = ~ended
            if not still.all():
                live = live[still]
                rows = torch.as_tensor(live, device=device)
            states[rows, now + 1] = policy.normalize(obs[still])
            rtg[rows, now + 1] = rtg[rows, now] - policy.scaled_rewards(rewards[still])
    bar.close()
    return EpisodeResults(np.asarray(seeds), targets, returns, lengths)
