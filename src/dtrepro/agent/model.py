"""The Decision Transformer (Chen et al., 2021): a causal GPT over (return-to-go, state, action) tokens.

Each timestep contributes three tokens, R_t, s_t, a_t, each embedded linearly
plus a learned embedding of the episode timestep t, then a LayerNorm. Causal
self-attention blocks read the 3K tokens; the action a_t is predicted from the
hidden state of token s_t (which has seen R_<=t, s_<=t, a_<t) through tanh.
Acting needs only the last of these predictions; `final_action` computes just
what it depends on. Dropout (embeddings, attention weights, residuals), as the paper's
GPT, is torch's own on GPUs and `dtrepro.agent.dropout`'s on the CPU (bench/train.py: faster steps there).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from dtrepro.agent.dropout import Dropout, attention
from dtrepro.params import ModelParams
from dtrepro.registry.datasets import TIME_LIMIT

MAX_TIMESTEP = TIME_LIMIT  # timestep embeddings: one per step of the longest episode


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "gelu_new": lambda: nn.GELU(approximate="tanh")}


class ModelConfig(ModelParams):
    """The model section with what the data and the run add: all a checkpoint needs to rebuild the network."""

    activation: Literal["gelu", "relu", "gelu_new"] = "gelu"  # checkpoints written before the key: GELU

    state_dim: Annotated[int, Field(ge=1)]
    act_dim: Annotated[int, Field(ge=1)]
    context_len: Annotated[int, Field(ge=1)]
    max_timestep: int = MAX_TIMESTEP

    def to_dict(self) -> dict:
        return self.model_dump()


class Block(nn.Module):
    """Pre-LayerNorm GPT block: causal self-attention then a 4x MLP, each with a residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.p_attn = cfg.heads, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.embed_dim), nn.LayerNorm(cfg.embed_dim)
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, 4 * cfg.embed_dim),
            ACTIVATIONS[cfg.activation](),
            nn.Linear(4 * cfg.embed_dim, cfg.embed_dim),
            Dropout(cfg.dropout),
        )
        self.resid_drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """The block's output for every token, or with `queries=n` for the last n tokens only (which still
        attend to all)."""
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        if queries is not None:
            x, q, attn_mask = x[:, -queries:], q[:, -queries:], attn_mask[..., -queries:, :]
        q, k, v = (z.reshape(b, z.shape[1], self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = attention(q, k, v, attn_mask, self.p_attn if self.training else 0.0)
        x = x + self.resid_drop(self.proj(y.transpose(1, 2).reshape(x.shape)))
        return x + self.mlp(self.ln2(x))


class DecisionTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.embed_dim
        self.embed_timestep = nn.Embedding(cfg.max_timestep, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(cfg.state_dim, h)
        self.embed_action = nn.Linear(cfg.act_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(h)
        self.predict_action = nn.Sequential(nn.Linear(h, cfg.act_dim), nn.Tanh())
        causal = torch.tril(torch.ones(3 * cfg.context_len, 3 * cfg.context_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _tokens(self, states, actions, returns_to_go, timesteps, mask, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n of the 3K embedded tokens R_1, s_1, a_1, ..., and their (B, 1, n, n) attention mask."""
        b, k, _ = states.shape
        time = self.embed_timestep(timesteps)
        tokens = torch.stack(
            (
                self.embed_return(returns_to_go.unsqueeze(-1)) + time,
                self.embed_state(states) + time,
                self.embed_action(actions) + time,
            ),
            dim=2,
        ).reshape(b, 3 * k, self.cfg.embed_dim)[:, :n]
        x = self.drop(self.embed_ln(tokens))
        keys = mask.repeat_interleave(3, dim=1)[:, :n]  # (B, n)
        # causal, padded keys hidden; every token may see itself so that padded rows stay finite
        allowed = self.causal[:n, :n] & (keys[:, None, :] | torch.eye(n, dtype=torch.bool, device=x.device))
        return x, allowed.unsqueeze(1)

    def forward(
        self,
        states: torch.Tensor,  # (B, K, state_dim), normalised
        actions: torch.Tensor,  # (B, K, act_dim)
        returns_to_go: torch.Tensor,  # (B, K), scaled
        timesteps: torch.Tensor,  # (B, K) long
        mask: torch.Tensor,  # (B, K) bool: False where left-padded
    ) -> torch.Tensor:
        """Predicted actions (B, K, act_dim); position k is predicted from tokens up to s_k."""
        b, k, _ = states.shape
        x, attn_mask = self._tokens(states, actions, returns_to_go, timesteps, mask, 3 * k)
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.ln_f(x).reshape(b, k, 3, self.cfg.embed_dim)
        return self.predict_action(x[:, :, 1])

    def final_action(self, states, actions, returns_to_go, timesteps, mask, queries: int = 1) -> torch.Tensor:
        """`forward(...)[:, -1]`, the action predicted at the last timestep (B, act_dim), computed alone.

        The final token a_K comes after s_K and is dropped; the last block computes its output for the
        final `queries` tokens up to s_K only. That leaves about a quarter of a 3-layer model's work
        undone. A `queries` of a few rows keeps the matrix products shaped so that, on CPU BLAS, the
        result is the same to the bit as the full forward's (tests/test_sampler_model.py checks it).
        """
        k = states.shape[1]
        x, attn_mask = self._tokens(states, actions, returns_to_go, timesteps, mask, 3 * k - 1)
        *first, last = self.blocks
        for block in first:
            x = block(x, attn_mask)
        x = last(x, attn_mask, queries=min(queries, 3 * k - 1))
        return self.predict_action(self.ln_f(x))[:, -1]  # the head sees all `queries` rows, as the blocks do


def action_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, denominator=None) -> torch.Tensor:
    """Mean squared error over the real (unpadded) positions only; their count, or `denominator` in its place
    (under DDP, the global batch's count over the ranks)."""
    err = ((predicted.float() - target.float()) ** 2).mean(dim=-1)
    return (err * mask).sum() / (mask.sum().clamp(min=1) if denominator is None else denominator)
