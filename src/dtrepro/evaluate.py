"""Run a trained Decision Transformer in the env: many episodes stepped together.

All episodes advance in lockstep, so at each timestep one model forward serves
every live episode; an episode that ends leaves the batch. Episode i is reset
with seed `seed + i`, and its return-to-go starts at the target and falls by
each reward received, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dtrepro.collect.rollout import make_env
from dtrepro.model import DecisionTransformer


@dataclass
class Policy:
    """A model with the normalisation it was trained with: all a checkpoint needs to act."""

    model: DecisionTransformer
    state_mean: np.ndarray
    state_std: np.ndarray
    return_scale: float

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class EpisodeResults:
    returns: np.ndarray
    lengths: np.ndarray


@torch.no_grad()
def run_episodes(
    policy: Policy, env_id: str, episodes: int, target_return: float, seed: int, max_steps: int = 1000
) -> EpisodeResults:
    """Run `episodes` episodes together; one forward pass per timestep for all live episodes."""
    model, cfg, device = policy.model.eval(), policy.model.cfg, policy.device
    envs = [make_env(env_id) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    mean, std = torch.as_tensor(policy.state_mean, device=device), torch.as_tensor(policy.state_std, device=device)
    states = torch.zeros(episodes, max_steps, cfg.state_dim, device=device)
    actions = torch.zeros(episodes, max_steps, cfg.act_dim, device=device)
    rtg = torch.zeros(episodes, max_steps, device=device)
    timesteps = torch.arange(max_steps, device=device).clamp(max=cfg.max_timestep - 1)
    states[:, 0] = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std
    rtg[:, 0] = target_return / policy.return_scale
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    live = np.arange(episodes)
    k = cfg.context_len
    for t in range(max_steps):
        lo = max(0, t + 1 - k)
        width = t + 1 - lo
        pad = k - width
        idx = torch.as_tensor(live, device=device)
        window = {
            "states": states[idx, lo : t + 1],
            "actions": actions[idx, lo : t + 1],
            "returns_to_go": rtg[idx, lo : t + 1],
            "timesteps": timesteps[lo : t + 1].expand(len(live), width),
        }
        if pad:
            window = {
                n: torch.nn.functional.pad(v, (0, 0, pad, 0) if v.dim() == 3 else (pad, 0)) for n, v in window.items()
            }
        mask = (torch.arange(k, device=device) >= pad).expand(len(live), k)
        act = model(window["states"], window["actions"], window["returns_to_go"], window["timesteps"], mask)[:, -1]
        actions[idx, t] = act
        act_np = act.float().cpu().numpy()
        still = []
        rewards = np.zeros(len(live))
        for j, e in enumerate(live):
            o, r, terminated, _, _ = envs[e].step(act_np[j])
            returns[e] += r
            lengths[e] += 1
            rewards[j] = r
            if not terminated and t + 1 < max_steps:
                still.append(j)
                obs[e] = o
        if not still:
            break
        live = live[still]
        nxt = torch.as_tensor(live, device=device)
        states[nxt, t + 1] = (torch.as_tensor(obs[live], dtype=torch.float32, device=device) - mean) / std
        reward = torch.as_tensor(rewards[still], dtype=torch.float32, device=device)
        rtg[nxt, t + 1] = rtg[nxt, t] - reward / policy.return_scale
    for env in envs:
        env.close()
    return EpisodeResults(returns, lengths)
