"""Sampling from the GPT (lesson 05): temperature and top-k over the model's KV cache.

Each step turns the next-token logits :math:`z` into a distribution and draws from it:

.. math::

    p_i = \\frac{e^{z_i / T}}{\\sum_j e^{z_j / T}}

where the temperature :math:`T` sharpens (:math:`T < 1`) or flattens (:math:`T > 1`) the
distribution, :math:`T = 0` means greedy (the arg-max), and top-k first sets every logit below the
k-th largest to :math:`-\\infty`. The loop reads the prompt once and then feeds one token per step
through the KV cache (:meth:`minillm.model.GPT.new_kv_cache`); when the cache is full it refills
from the last half block. Lesson 11's :func:`minillm.serve.generate` uses the same steps and adds
top-p, min-p, repetition penalties, stop strings and streaming; with only temperature and top-k
the two give the same tokens for the same generator.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["cached_steps", "check_sampling_args", "recomputed_steps", "sample"]

Steps = Generator[torch.Tensor, torch.Tensor, None]


def cached_steps(model: Any, context: torch.Tensor) -> Steps:
    """Coroutine: yields next-token logits (B, V), receives each chosen token (B, 1)."""
    block = model.config.block_size
    cache = model.new_kv_cache(context.shape[0])
    # Ids were checked and new ones come from the model: skip the checks, and compute the output
    # layer for the last position only.
    window = context
    next_id = yield model._next_logits(context, cache)
    while True:
        window = torch.cat([window, next_id], dim=1)
        if cache.length == cache.max_len:  # full: slide the window by half a block
            window = window[:, -max(1, block // 2) :]
            cache.reset()
            next_id = yield model._next_logits(window, cache)
        else:
            next_id = yield model._next_logits(next_id, cache)


def recomputed_steps(model: Any, context: torch.Tensor) -> Steps:
    """The same windows as :func:`cached_steps`, each recomputed from scratch (the baseline)."""
    block = model.config.block_size
    window = context
    next_id = yield model(window)[0][:, -1]
    while True:
        window = torch.cat([window, next_id], dim=1)
        if window.shape[1] > block:  # where the cached loop refills: the same window
            window = window[:, -max(1, block // 2) :]
        next_id = yield model(window)[0][:, -1]


def check_sampling_args(max_new_tokens: Any, temperature: Any, top_k: Any) -> None:
    """Refuse a negative length, a negative temperature or a top-k below 1, saying what is allowed."""
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def _next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if temperature != 1:
        logits = logits / temperature
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


@torch.no_grad()
def sample(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    *,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue each sequence of ``idx`` (batch, time) by ``max_new_tokens`` sampled tokens.

    Prompts longer than ``block_size`` keep their last ``block_size`` tokens. A seeded
    ``generator`` makes the draws repeatable. Returns the prompt followed by the new tokens,
    (batch, time + max_new_tokens).
    """
    check_sampling_args(max_new_tokens, temperature, top_k)
    context = idx[:, -model.config.block_size :] if isinstance(idx, torch.Tensor) else idx
    model._check_ids(context)
    if max_new_tokens == 0:
        return idx
    was_training = model.training
    model.eval()
    try:
        out = [idx]
        steps = cached_steps(model, context) if use_cache else recomputed_steps(model, context)
        logits = next(steps)
        for step in range(max_new_tokens):
            out.append(_next_token(logits, temperature, top_k, generator))
            if step < max_new_tokens - 1:
                logits = steps.send(out[-1])
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)
