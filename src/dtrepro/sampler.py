"""Training windows for the Decision Transformer, drawn on the training device with no per-sample Python.

`Trajectories` prepares a clean D4RL file once: normalised states, returns-to-go
per episode (undiscounted, divided by the return scale), the timestep of each
row within its episode (capped at the model's limit), and every row's episode.
`WindowSampler` then draws a batch with a few tensor operations, keeping the
original implementation's semantics: an episode is chosen with probability
proportional to its length, a start index uniformly within it, and a window
that runs past the episode's end is left-padded and masked. No window ever
crosses an episode boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dtrepro.data.d4rl import D4RLData
from dtrepro.errors import DtreproError
from dtrepro.stats import episode_ends


def returns_to_go(rewards: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sum of the rewards from each row to the end of its episode (float64)."""
    tail = np.concatenate((np.cumsum(rewards[::-1].astype(np.float64))[::-1], [0.0]))
    end_of_row = np.repeat(ends, np.diff(np.concatenate(([-1], ends))))
    return tail[:-1] - tail[end_of_row + 1]


@dataclass
class Trajectories:
    states: torch.Tensor  # (N, state_dim) float32, normalised
    actions: torch.Tensor  # (N, act_dim) float32
    rtg: torch.Tensor  # (N,) float32, divided by return_scale
    timesteps: torch.Tensor  # (N,) long, within the episode, capped
    episode_start: torch.Tensor  # (E,) long
    episode_length: torch.Tensor  # (E,) long
    row_episode: torch.Tensor  # (N,) long
    state_mean: np.ndarray
    state_std: np.ndarray
    return_scale: float

    @classmethod
    def from_d4rl(cls, data: D4RLData, return_scale: float, max_timestep: int, device: str | torch.device):
        a = data.arrays
        ends = episode_ends(a["terminals"], a.get("timeouts", np.zeros(data.rows, bool)))
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        obs = a["observations"].astype(np.float64)
        mean, std = obs.mean(axis=0), obs.std(axis=0) + 1e-6
        row_episode = np.repeat(np.arange(len(ends)), lengths)
        timesteps = np.minimum(np.arange(data.rows) - starts[row_episode], max_timestep - 1)
        rtg = returns_to_go(a["rewards"], ends) / return_scale

        def put(x, dtype):
            return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

        return cls(
            states=put((obs - mean) / std, torch.float32),
            actions=put(a["actions"], torch.float32),
            rtg=put(rtg, torch.float32),
            timesteps=put(timesteps, torch.long),
            episode_start=put(starts, torch.long),
            episode_length=put(lengths, torch.long),
            row_episode=put(row_episode, torch.long),
            state_mean=mean.astype(np.float32),
            state_std=std.astype(np.float32),
            return_scale=return_scale,
        )

    @property
    def rows(self) -> int:
        return len(self.rtg)


class WindowSampler:
    """Draws batches of K-step windows: dict(states, actions, returns_to_go, timesteps, mask)."""

    def __init__(self, data: Trajectories, context_len: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise DtreproError(f"The batch size is {batch_size}; it must be at least 1 (train.batch_size).")
        if context_len < 1:
            raise DtreproError(f"The context length is {context_len}; it must be at least 1 (model.context_len).")
        longest = int(data.episode_length.max())
        if context_len > longest:
            raise DtreproError(
                f"model.context_len={context_len} is longer than every episode of the dataset (the longest has "
                f"{longest} steps), so every window would be mostly padding. Use a context of at most {longest}."
            )
        self.data, self.k, self.batch_size = data, context_len, batch_size
        device = data.rtg.device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.offsets = torch.arange(context_len, device=device)

    def sample(self) -> dict[str, torch.Tensor]:
        d, k, g = self.data, self.k, self.generator
        device = d.rtg.device
        # a uniformly drawn row picks its episode with probability proportional to the episode's length
        row = torch.randint(d.rows, (self.batch_size,), generator=g, device=device)
        episode = d.row_episode[row]
        start, length = d.episode_start[episode], d.episode_length[episode]
        first = start + (torch.rand(self.batch_size, generator=g, device=device) * length).long()
        valid = torch.clamp(start + length - first, max=k)  # rows of the window inside the episode
        pad = (k - valid).unsqueeze(1)
        mask = self.offsets.unsqueeze(0) >= pad  # left padding
        index = (first.unsqueeze(1) + self.offsets - pad).clamp(min=0)
        index = torch.where(mask, index, first.unsqueeze(1))  # any in-range row; masked out below
        m = mask.unsqueeze(-1)
        return {
            "states": torch.where(m, d.states[index], 0.0),
            "actions": torch.where(m, d.actions[index], 0.0),
            "returns_to_go": torch.where(mask, d.rtg[index], 0.0),
            "timesteps": torch.where(mask, d.timesteps[index], 0),
            "mask": mask,
        }
