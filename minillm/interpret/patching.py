"""Activation patching (lesson 13): swap one layer's residual stream at one position between a
clean and a corrupted prompt and measure what changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from minillm.interpret.hooks import _as_batch, _forward_hooks, _logits, _stream_modules
from minillm.interpret.lens import residual_stream

__all__ = ["patch_residual", "patching_sweep"]


def _check_pair(clean: torch.Tensor, corrupt: torch.Tensor) -> None:
    if clean.shape != corrupt.shape:
        raise ValueError(
            f"clean and corrupted prompts must have the same shape (token for token), got "
            f"{tuple(clean.shape)} and {tuple(corrupt.shape)}"
        )


def patch_residual(
    model: nn.Module, corrupt: Any, clean_stream: torch.Tensor, layer: int, positions: Sequence[int]
) -> torch.Tensor:
    """Run ``corrupt`` with the residual stream after ``layer`` replaced by the clean run's.

    Args:
        model: the GPT.
        corrupt: (batch, time) token ids; batch row ``b`` is patched at ``positions[b]``.
        clean_stream: (n_layer + 1, 1, time, n_embd) from :func:`residual_stream` on the clean
            prompt.
        layer: 0 for the embeddings, ``l`` for the output of block ``l``.
        positions: one position per batch row.

    Returns:
        The patched run's logits (batch, time, vocab).
    """
    corrupt = _as_batch(corrupt)
    modules = _stream_modules(model)
    if not 0 <= layer < len(modules):
        raise ValueError(f"layer must be in 0..{len(modules) - 1}, got {layer}")
    if len(positions) != corrupt.shape[0]:
        raise ValueError(
            f"need one position per batch row ({corrupt.shape[0]}), got {len(positions)}"
        )
    T = corrupt.shape[1]
    if any(not 0 <= p < T for p in positions):
        raise ValueError(f"positions must be in 0..{T - 1}, got {list(positions)}")
    rows = torch.arange(len(positions))
    cols = torch.tensor(list(positions))

    def patch(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[rows, cols] = clean_stream[layer, 0, cols].to(output)
        return output

    with _forward_hooks([(modules[layer], patch)]):
        return _logits(model, corrupt)


@torch.no_grad()
def patching_sweep(
    model: nn.Module, clean: Any, corrupt: Any, answer: int, wrong: int
) -> dict[str, Any]:
    """Activation patching over every layer × position, scored by the restored logit difference.

    The metric is the logit difference at the last position, ``m = z[answer] - z[wrong]``. For
    each layer and position, the corrupted run is repeated with that one residual vector taken
    from the clean run, and the fraction restored is
    ``(m_patched - m_corrupt) / (m_clean - m_corrupt)``: 0 means the patch did nothing, 1 that it
    brought the clean answer back entirely.

    Returns:
        ``{"restored": (n_layer + 1, time) tensor, "clean": m_clean, "corrupt": m_corrupt}``.
    """
    clean, corrupt = _as_batch(clean), _as_batch(corrupt)
    _check_pair(clean, corrupt)
    if clean.shape[0] != 1:
        raise ValueError(f"patching compares two single prompts; got a batch of {clean.shape[0]}")
    stream, clean_logits = residual_stream(model, clean)
    corrupt_logits = _logits(model, corrupt)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, answer] - logits[:, -1, wrong]).float()

    m_clean, m_corrupt = float(metric(clean_logits)), float(metric(corrupt_logits))
    if abs(m_clean - m_corrupt) < 1e-9:
        raise ValueError("the clean and corrupted prompts give the same logit difference")
    T = clean.shape[1]
    restored = torch.empty(len(stream), T)
    for layer in range(len(stream)):
        patched = patch_residual(model, corrupt.expand(T, -1), stream, layer, list(range(T)))
        restored[layer] = (metric(patched) - m_corrupt) / (m_clean - m_corrupt)
    return {"restored": restored, "clean": m_clean, "corrupt": m_corrupt}
