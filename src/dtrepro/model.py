"""The Decision Transformer (Chen et al., 2021): a causal GPT over (return-to-go, state, action) tokens.

Each timestep contributes three tokens, R_t, s_t, a_t, each embedded linearly
plus a learned embedding of the episode timestep t, then a LayerNorm. Causal
self-attention blocks read the 3K tokens; the action a_t is predicted from the
hidden state of token s_t (which has seen R_<=t, s_<=t, a_<t) through tanh.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    state_dim: int
    act_dim: int
    embed_dim: int = 128
    layers: int = 3
    heads: int = 1
    context_len: int = 20
    dropout: float = 0.1
    max_timestep: int = 1000

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-LayerNorm GPT block: causal self-attention then a 4x MLP, each with a residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.embed_dim), nn.LayerNorm(cfg.embed_dim)
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, 4 * cfg.embed_dim),
            nn.GELU(),
            nn.Linear(4 * cfg.embed_dim, cfg.embed_dim),
            nn.Dropout(cfg.dropout),
        )
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))
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
        self.drop = nn.Dropout(cfg.dropout)
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
        time = self.embed_timestep(timesteps)
        tokens = torch.stack(
            (
                self.embed_return(returns_to_go.unsqueeze(-1)) + time,
                self.embed_state(states) + time,
                self.embed_action(actions) + time,
            ),
            dim=2,
        ).reshape(b, 3 * k, self.cfg.embed_dim)
        x = self.drop(self.embed_ln(tokens))
        keys = mask.repeat_interleave(3, dim=1)  # (B, 3K)
        # causal, padded keys hidden; every token may see itself so that padded rows stay finite
        allowed = self.causal[: 3 * k, : 3 * k] & (
            keys[:, None, :] | torch.eye(3 * k, dtype=torch.bool, device=x.device)
        )
        attn_mask = allowed.unsqueeze(1)  # (B, 1, 3K, 3K)
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.ln_f(x).reshape(b, k, 3, self.cfg.embed_dim)
        return self.predict_action(x[:, :, 1])


def action_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (unpadded) positions only."""
    err = ((predicted.float() - target.float()) ** 2).mean(dim=-1)
    return (err * mask).sum() / mask.sum().clamp(min=1)
