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
from dtrepro.data.flags import episode_ends
from dtrepro.runtime.errors import DtreproError


def returns_to_go(rewards: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sum of the rewards from each row to the end of its episode (float64)."""
    tail = np.concatenate((np.cumsum(rewards[::-1].astype(np.float64))[::-1], [0.0]))
    end_of_row = np.repeat(ends, np.diff(np.concatenate(([-1], ends))))
    return tail[:-1] - tail[end_of_row + 1]


def state_statistics(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std states are normalised with: the data's own, the std 1e-6 above zero, as in the DT paper's
    code (and transformers' DT training example)."""
    obs = np.asarray(observations, dtype=np.float64)
    return obs.mean(axis=0), obs.std(axis=0) + 1e-6


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
        mean, std = state_statistics(obs)
        row_episode = np.repeat(np.arange(len(ends)), lengths)
        if lengths.max(initial=0) > max_timestep:
            raise DtreproError(
                f"The data hold an episode of {lengths.max():,} steps, but the model embeds timesteps up to "
                f"{max_timestep:,} (the envs' time limit): later steps would all share the last embedding. Its "
                f"boundaries are wrong: set repair.max_episode_steps to at most {max_timestep:,} so that the repair "
                f"stage cuts episodes at the time limit."
            )
        timesteps = np.arange(data.rows) - starts[row_episode]
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
    """Draws batches of K-step windows: dict(states, actions, returns_to_go, timesteps, mask).

    Choosing an episode with probability proportional to its length and then a
    start uniformly within it is the same as choosing the start row uniformly
    among all rows: P(start = j) = (len_e / N) * (1 / len_e) = 1 / N. So one
    `randint` picks the start, each row's episode end bounds the window, and a
    single gather from one packed table (a zero row appended for the padding)
    builds the batch.

    Under DDP every rank draws the same global batch of `batch_size` starts from the same seed and
    gathers only its `part` (rank, world) of them: the ranks together train on exactly the batch one
    process would, and their samplers' states stay equal.
    """

    def __init__(self, data: Trajectories, context_len: int, batch_size: int, seed: int, part=(0, 1)):
        if batch_size < 1:
            raise DtreproError(f"The batch size is {batch_size}; it must be at least 1 (train.batch_size).")
        if context_len < 1:
            raise DtreproError(f"The context length is {context_len}; it must be at least 1 (study.context_lens).")
        longest = int(data.episode_length.max())
        if context_len > longest:
            raise DtreproError(
                f"The context length {context_len} (study.context_lens) is longer than every episode of the "
                f"dataset (the longest has {longest} steps), so every window would be mostly padding. "
                f"Use a context of at most {longest}."
            )
        rank, world = part
        if batch_size % world:
            raise DtreproError(f"train.batch_size={batch_size} does not split over {world} processes.")
        self.data, self.k, self.batch_size = data, context_len, batch_size
        self.rows = slice(rank * batch_size // world, (rank + 1) * batch_size // world)  # this rank's windows
        device = data.rtg.device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.offsets = torch.arange(context_len, device=device)
        end = data.episode_start + data.episode_length  # one past each episode's last row
        self.rows_left = end[data.row_episode] - torch.arange(data.rows, device=device)  # rows to the episode's end
        table = torch.cat((data.states, data.actions, data.rtg[:, None], data.timesteps[:, None].float()), dim=1)
        self.table = torch.cat((table, torch.zeros(1, table.shape[1], device=device)))  # row N: padding
        self.split = (data.states.shape[1], data.actions.shape[1], 1, 1)

    def sample(self) -> dict[str, torch.Tensor]:
        n, k = self.data.rows, self.k
        first = torch.randint(n, (self.batch_size, 1), generator=self.generator, device=self.table.device)[self.rows]
        pad = k - torch.clamp(self.rows_left[first], max=k)  # (B, 1): left padding of each window
        mask = self.offsets >= pad
        index = torch.where(mask, first + self.offsets - pad, n)
        states, actions, rtg, timesteps = self.table[index].split(self.split, dim=-1)
        return {
            "states": states,
            "actions": actions,
            "returns_to_go": rtg.squeeze(-1),
            "timesteps": timesteps.squeeze(-1).long(),
            "mask": mask,
        }
