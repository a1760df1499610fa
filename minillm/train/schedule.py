"""The optimizer set-up and the learning-rate schedule (lesson 05): AdamW with weight decay on
the matrices only, linear warmup then cosine decay to a floor.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from minillm.train.muon import MuonAdamW, muon_adamw_groups

__all__ = ["get_lr", "configure_optimizer"]


def get_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    Warmup rises linearly to ``max_lr`` over ``warmup_steps`` (step 0 already gets a small
    non-zero rate); the cosine then falls from ``max_lr`` to ``min_lr`` at ``max_steps``.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def configure_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    device_type: str = "cpu",
    optimizer: str = "adamw",
    muon_lr: float = 0.01,
) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (linear and embedding weights) and none elsewhere.

    Biases and normalisation gains are vectors: decaying them toward zero only hurts. The fused
    kernel is used where PyTorch has one (CUDA, CPU), otherwise the multi-tensor ``foreach`` one.
    ``optimizer="muon"``: a :class:`minillm.train.muon.MuonAdamW` instead, Muon (at ``muon_lr``,
    with the same decoupled weight decay) on the blocks' matrices and AdamW on the rest.
    """
    if optimizer == "muon":
        groups = muon_adamw_groups(model, learning_rate, weight_decay, betas, muon_lr)
        return MuonAdamW(groups)
    if optimizer != "adamw":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device_type in ("cuda", "cpu")
    kwargs: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **kwargs)
