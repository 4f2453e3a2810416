"""Dropout on the CPU from four 16-bit uniforms per 64-bit draw, and attention with it; torch's own elsewhere.

On the CPU torch draws each entry of a dropout mask with `bernoulli_` and applies it through a bool
product, about 1.5 ms for a (64, 60, 64) tensor: with seven of them, a third of a training step of the
demo's model (bench/train.py: 1.45x faster steps with this one). Here one full-range int64 draw of
torch's default generator (seeded by `torch.manual_seed`, saved with the resume state's RNG) gives four
int16 uniforms; an entry is dropped where its uniform falls among the lowest round(p * 2^16) of the 2^16
values, so p is used to within 2^-17 (0.1 as 0.100006), and the kept entries are scaled by the exact
inverse of the keep rate. CUDA's fused kernels are fast, so GPUs use torch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # the resolution of the uniforms


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`; on the CPU with its mask made from four 16-bit uniforms per 64-bit draw."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    dropped = round(p * _LEVELS)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= dropped - _LEVELS // 2
    return x * keep.to(x.dtype) * (_LEVELS / (_LEVELS - dropped))


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, mask, dropout_p=p)`; with dropout on the CPU, what SDPA computes
    then (its math path), the weights dropped by `dropout`."""
    if p and q.device.type == "cpu":
        weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).masked_fill(~mask, -math.inf)
        return dropout(weights.softmax(dim=-1), p) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
