"""A trained Decision Transformer ready to act: the model with the normalisation it was trained with."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import ValidationError

from dtrepro.agent.checkpoint import Checkpoint
from dtrepro.agent.model import DecisionTransformer, ModelConfig
from dtrepro.runtime.errors import DtreproError

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


def policy_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Policy, Checkpoint]:
    """Load a checkpoint as a ready-to-act policy, with the checkpoint itself."""
    ckpt = Checkpoint.load(path, device)
    try:
        model = DecisionTransformer(ModelConfig(**ckpt.config)).to(device)
        model.load_state_dict(ckpt.model)
    except (ValidationError, RuntimeError, TypeError) as err:
        raise DtreproError(
            f"Checkpoint {path} does not fit its own model config ({' '.join(str(err).split())[:300]}): its weights "
            f"are not those of the network it describes. Use a last.pt or best.pt that the train stage wrote, or run "
            f"it again."
        ) from None
    return Policy(model, ckpt.state_mean.cpu().numpy(), ckpt.state_std.cpu().numpy(), float(ckpt.return_scale)), ckpt
