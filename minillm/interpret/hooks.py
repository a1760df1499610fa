"""Looking inside a trained GPT (lesson 13): the hooks every reading goes through.

Every reading in :mod:`minillm.interpret` comes from the model's own forward
pass, changed only through hooks:

- :func:`attention_maps` records the attention probabilities of every layer and head (the
  ``probs_hook`` of :class:`minillm.model.CausalSelfAttention`, on its explicit softmax path);
  :func:`head_scores` turns them into measured head types (previous-token, first-token "sink",
  duplicate-token, local window), :func:`attention_rollout` composes them across layers and
  :func:`ablate_heads` switches heads off.
- :func:`residual_stream` reads the residual stream after the embeddings and after each block;
  :func:`logit_lens` reads each one out through the final norm and the output matrix, and
  :func:`lens_scores` scores those read-outs as next-token predictors.
- :func:`gradient_x_input` and :func:`integrated_gradients` attribute a next-token
  log-probability to the input tokens (through their embeddings).
- :func:`patch_residual` and :func:`patching_sweep` swap one layer's residual stream at one
  position between a clean and a corrupted prompt (activation patching).
- :func:`probe_layers` fits a logistic-regression probe per layer (scikit-learn) beside a
  shuffled-label control.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["bits_per_byte"]


# ---------------------------------------------------------------------------------------------
# Checks and plumbing
# ---------------------------------------------------------------------------------------------


def _blocks(model: nn.Module) -> nn.ModuleList:
    transformer = getattr(model, "transformer", None)
    if transformer is None or "h" not in transformer:
        raise TypeError(
            f"expected a minillm GPT (with transformer.h blocks), got {type(model).__name__}"
        )
    return transformer.h


def _as_batch(idx: Any) -> torch.Tensor:
    """Token ids as a (batch, time) long tensor; a 1-D sequence becomes a batch of one."""
    if isinstance(idx, Sequence) and not isinstance(idx, torch.Tensor):
        idx = torch.tensor(list(idx), dtype=torch.long)
    if not isinstance(idx, torch.Tensor) or idx.dtype.is_floating_point:
        raise TypeError(f"token ids must be an integer tensor or a list of ints, got {idx!r:.80}")
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(
            f"token ids must have shape (time,) or (batch, time), got {tuple(idx.shape)}"
        )
    return idx.long()


def _logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    return out[0] if isinstance(out, tuple | list) else out


@contextlib.contextmanager
def _probs_hooks(
    model: nn.Module, hook_for_layer: Callable[[int], Callable[[torch.Tensor], torch.Tensor]]
) -> Iterator[None]:
    """Run attention on its explicit path with ``hook_for_layer(i)`` on layer i's probabilities."""
    attns = [block.attn for block in _blocks(model)]
    saved = [(a.use_sdpa, a.__dict__.get("probs_hook")) for a in attns]
    try:
        for i, attn in enumerate(attns):
            attn.use_sdpa = False  # the same computation, written out, so the weights exist
            attn.probs_hook = hook_for_layer(i)
        yield
    finally:
        for attn, (use_sdpa, hook) in zip(attns, saved, strict=True):
            attn.use_sdpa = use_sdpa
            if hook is None:
                attn.__dict__.pop("probs_hook", None)
            else:
                attn.probs_hook = hook


@contextlib.contextmanager
def _forward_hooks(hooks: Sequence[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _stream_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the residual stream: the embedding dropout, then each block."""
    return [model.transformer.drop, *_blocks(model)]


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The residual stream and the logit lens
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Attribution: gradient x input and integrated gradients
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Activation patching
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Linear probes
# ---------------------------------------------------------------------------------------------


def bits_per_byte(nll_sum: float | np.ndarray, n_bytes: int) -> float | np.ndarray:
    """Summed cross-entropy in nats turned into bits per UTF-8 byte of the scored text."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return np.asarray(nll_sum) / math.log(2) / n_bytes
