"""Attention of a trained GPT (lesson 13): the maps of every head, measured head types,
rollout across layers, and heads switched off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from minillm.interpret.hooks import _as_batch, _blocks, _logits, _probs_hooks

__all__ = ["HEAD_SCORES", "attention_maps", "head_scores", "attention_rollout", "ablate_heads"]


HEAD_SCORES = ("previous token", "first token", "duplicate token", "local window")
"""The head scores :func:`head_scores` returns, in order."""


def attention_maps(model: nn.Module, idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention probabilities of every layer and head, from the model's own forward pass.

    Args:
        model: a :class:`minillm.model.GPT` (quantized or LoRA-wrapped ones too).
        idx: token ids, (time,) or (batch, time).

    Returns:
        ``(attn, logits)``: attn (n_layer, batch, n_head, time, time), row ``t`` of a head the
        distribution of query ``t`` over the keys ``0..t``; logits (batch, time, vocab) of the
        same pass. Gradients flow through both when they are enabled.
    """
    idx = _as_batch(idx)
    recorded: dict[int, torch.Tensor] = {}

    def hook_for(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def record(weights: torch.Tensor) -> torch.Tensor:
            recorded[layer] = weights
            return weights

        return record

    with _probs_hooks(model, hook_for):
        logits = _logits(model, idx)
    return torch.stack([recorded[i] for i in range(len(recorded))]), logits


def _check_attention(attn: torch.Tensor) -> torch.Tensor:
    if not isinstance(attn, torch.Tensor) or attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(f"attention must have shape (layers, batch, heads, T, T), got {got}")
    return attn


def head_scores(attn: torch.Tensor, idx: Any, window: int = 3) -> dict[str, torch.Tensor]:
    """Measured head types: the mean attention mass each head puts on a kind of key.

    For each query position ``t`` (averaged over the queries where the score is defined, and
    over the batch):

    - **previous token**: the weight on key ``t - 1`` (queries ``t >= 1``);
    - **first token**: the weight on key 0, the "attention sink" (queries ``t >= 1``);
    - **duplicate token**: the weight on earlier keys holding the same token as ``t`` (queries
      that have one);
    - **local window**: the weight on the last ``window`` keys ``t - window + 1 .. t`` (queries
      ``t >= window``, where the window does not already cover everything).

    Args:
        attn: (n_layer, batch, n_head, T, T) from :func:`attention_maps`.
        idx: the token ids it was computed on, (T,) or (batch, T).
        window: width of the local window, at least 1.

    Returns:
        ``{name: (n_layer, n_head) tensor}`` for the names of :data:`HEAD_SCORES`; a score with
        no defined query is NaN.
    """
    attn = _check_attention(attn).detach().float()
    idx = _as_batch(idx)
    T = attn.shape[-1]
    if idx.shape != (attn.shape[1], T):
        raise ValueError(
            f"idx has shape {tuple(idx.shape)}; the attention is for {(attn.shape[1], T)}"
        )
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    q = torch.arange(T)[:, None]
    k = torch.arange(T)[None, :]

    def mean_mass(key_mask: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        # key_mask (B, T, T) or (T, T); query_mask (B, T) or (T,): average over chosen queries
        key_mask = key_mask.expand(idx.shape[0], T, T).float()
        query_mask = query_mask.expand(idx.shape[0], T).float()
        mass = (attn * key_mask[None, :, None]).sum(-1)  # (L, B, H, T)
        total = (mass * query_mask[None, :, None]).sum((1, 3))
        count = query_mask.sum()
        return total / count if count > 0 else torch.full_like(total, float("nan"))

    after_first = torch.arange(T) >= 1
    same = (idx[:, :, None] == idx[:, None, :]) & (k < q)  # (B, T, T): earlier copies
    return {
        "previous token": mean_mass(k == q - 1, after_first),
        "first token": mean_mass(k == 0, after_first),
        "duplicate token": mean_mass(same, same.any(-1)),
        "local window": mean_mass((k <= q) & (k > q - window), torch.arange(T) >= window),
    }


def attention_rollout(attn: torch.Tensor, residual_weight: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each token flows into each position.

    Each layer's head-averaged attention is mixed with the identity for the residual connection,
    ``Â = w·I + (1 - w)·mean_h(A)`` (rows still sum to 1), and the layers are composed,
    ``R = Â_L ⋯ Â_2 Â_1``.

    Args:
        attn: (n_layer, batch, n_head, T, T) from :func:`attention_maps`.
        residual_weight: ``w``, the share of the identity, in [0, 1].

    Returns:
        (batch, T, T): row ``t`` is the share of each input token in position ``t``.
    """
    attn = _check_attention(attn).detach().float()
    if not 0.0 <= residual_weight <= 1.0:
        raise ValueError(f"residual_weight must be in [0, 1], got {residual_weight}")
    eye = torch.eye(attn.shape[-1])
    rollout = eye.expand(attn.shape[1], -1, -1)
    for layer in attn:
        mixed = residual_weight * eye + (1 - residual_weight) * layer.mean(1)  # (B, T, T)
        rollout = mixed @ rollout
    return rollout


@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Inside the block, the listed ``(layer, head)`` pairs attend to nothing (zero weights).

    A zeroed head contributes nothing to its layer's output projection (only the projection's
    bias remains), the usual "zero ablation".

    Raises:
        ValueError: a layer or head index outside the model.
    """
    n_layer = len(_blocks(model))
    n_head = _blocks(model)[0].attn.n_head
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < n_layer and 0 <= head < n_head):
            raise ValueError(
                f"no head ({layer}, {head}): layers are 0..{n_layer - 1}, heads 0..{n_head - 1}"
            )
        by_layer.setdefault(layer, []).append(head)

    def hook_for(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        keep = torch.ones(n_head)
        keep[by_layer.get(layer, [])] = 0.0

        def zero(weights: torch.Tensor) -> torch.Tensor:
            return weights * keep.to(weights)[None, :, None, None]

        return zero

    with _probs_hooks(model, hook_for):
        yield
