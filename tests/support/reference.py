"""The reference evaluation that `run_episodes` must match exactly: one episode after another.

Each episode runs alone, its padded window rebuilt from the growing history at every
step, the way the original implementation evaluates. Tests and benchmarks use it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dtrepro.agent.envs import make_env
from dtrepro.agent.episodes import EpisodeResults, broadcast_targets
from dtrepro.agent.policy import Policy
from dtrepro.registry.datasets import TIME_LIMIT


def run_episodes_one_by_one(
    policy: Policy, env_id: str, seeds: Sequence[int], targets: float | Sequence[float], max_steps: int = TIME_LIMIT
) -> EpisodeResults:
    """The reference: one episode after another, re-padding the growing history at every step."""
    model, device = policy.model.eval(), policy.device
    cfg, k = model.cfg, model.cfg.context_len
    targets = broadcast_targets(seeds, targets)
    returns, lengths = np.zeros(len(seeds)), np.zeros(len(seeds), dtype=np.int64)
    for i, (seed, target) in enumerate(zip(seeds, targets, strict=True)):
        env = make_env(env_id, max_steps)
        policy.check_env(env_id, env.observation_space.shape[0], env.action_space.shape[0])
        obs, _ = env.reset(seed=int(seed))
        states = policy.normalize(obs[None])
        actions = torch.zeros(0, cfg.act_dim, device=device)
        rtg = torch.as_tensor([target], dtype=torch.float32, device=device) / policy.return_scale
        timesteps = torch.zeros(1, dtype=torch.long, device=device)
        for t in range(max_steps):  # the env's time limit ends the episode at max_steps
            actions = torch.cat([actions, torch.zeros(1, cfg.act_dim, device=device)])
            width = min(k, t + 1)
            pad = k - width
            window = [states[-width:], actions[-width:], rtg[-width:], timesteps[-width:]]
            window = [torch.cat([torch.zeros((pad, *w.shape[1:]), dtype=w.dtype, device=device), w]) for w in window]
            mask = torch.cat([torch.zeros(pad, dtype=torch.bool), torch.ones(width, dtype=torch.bool)]).to(device)
            act = policy.act(*(w[None] for w in window), mask[None])[0]
            actions[-1] = act
            obs, reward, terminated, truncated, _ = env.step(act.cpu().numpy())
            returns[i] += reward
            lengths[i] += 1
            if terminated or truncated:
                break
            states = torch.cat([states, policy.normalize(obs[None])])
            rtg = torch.cat([rtg, rtg[-1:] - policy.scaled_rewards(np.array([reward]))])
            timesteps = torch.cat([timesteps, torch.full((1,), min(t + 1, cfg.max_timestep - 1), device=device)])
        env.close()
    return EpisodeResults(np.asarray(seeds), targets, returns, lengths)
