"""Attribution (lesson 13): which input tokens a next-token log-probability depends on, by
gradient x input and integrated gradients (through the token embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from minillm.interpret.hooks import _as_batch, _forward_hooks, _logits

__all__ = [
    "logprob_from_embeddings",
    "target_logprob",
    "gradient_x_input",
    "IGResult",
    "integrated_gradients",
]


def _embedding_module(model: nn.Module) -> nn.Module:
    return model.transformer.wte


def logprob_from_embeddings(
    model: nn.Module, idx: torch.Tensor, embeds: torch.Tensor, target: int, position: int
) -> torch.Tensor:
    """``log p(target)`` at ``position`` with the token embeddings replaced by ``embeds``.

    Args:
        model: the GPT.
        idx: (1, time) token ids (they still give the position embeddings and the shapes).
        embeds: (k, time, n_embd) token embeddings, one sequence per row.
        target: the token id; position: the position whose prediction is read.

    Returns:
        (k,) log-probabilities, differentiable with respect to ``embeds``.
    """

    def replace(_module: nn.Module, _inputs: Any, _output: torch.Tensor) -> torch.Tensor:
        return embeds

    with _forward_hooks([(_embedding_module(model), replace)]):
        logits = _logits(model, idx.expand(embeds.shape[0], -1))
    return torch.log_softmax(logits[:, position].float(), -1)[:, target]


def _check_target(model: nn.Module, idx: torch.Tensor, target: int, position: int) -> int:
    if idx.shape[0] != 1:
        raise ValueError(f"attribution explains one sequence; got a batch of {idx.shape[0]}")
    vocab = model.lm_head.weight.shape[0] if hasattr(model.lm_head, "weight") else None
    if not isinstance(target, int) or target < 0 or (vocab is not None and target >= vocab):
        raise ValueError(f"target must be a token id in 0..{vocab}, got {target!r}")
    T = idx.shape[1]
    if not -T <= position < T:
        raise ValueError(f"position {position} is outside the sequence of {T} tokens")
    return position % T


def target_logprob(model: nn.Module, idx: Any, target: int, position: int = -1) -> float:
    """``log p(target | idx[:position + 1])``: the quantity the attributions explain."""
    idx = _as_batch(idx)
    position = _check_target(model, idx, target, position)
    with torch.no_grad():
        return float(torch.log_softmax(_logits(model, idx)[0, position].float(), -1)[target])


def gradient_x_input(model: nn.Module, idx: Any, target: int, position: int = -1) -> torch.Tensor:
    """Gradient × input of ``log p(target)`` for each input token (its embedding's dot product).

    ``a_i = ∇_{e_i} f · e_i`` with ``e_i`` the token embedding of position ``i`` (before the
    position embedding is added). A first-order estimate of what removing the token (setting
    its embedding to zero) would change.

    Returns:
        (time,) attributions.
    """
    idx = _as_batch(idx)
    position = _check_target(model, idx, target, position)
    embeds = _embedding_module(model)(idx).detach().requires_grad_(True)
    with torch.enable_grad():
        out = logprob_from_embeddings(model, idx, embeds, target, position).sum()
        (grad,) = torch.autograd.grad(out, embeds)
    return (grad * embeds).sum(-1)[0].detach()


@dataclass
class IGResult:
    """Integrated gradients of one prediction.

    Attributes:
        attributions: (time,) per input token.
        output: ``f(x)``, the log-probability at the input.
        baseline_output: ``f(x')``, at the baseline embeddings.
        steps: number of points on the path.
    """

    attributions: torch.Tensor
    output: float
    baseline_output: float
    steps: int

    @property
    def completeness_gap(self) -> float:
        """``|Σ a_i - (f(x) - f(x'))| / |f(x) - f(x')|``: 0 for an exact integral."""
        delta = self.output - self.baseline_output
        return abs(float(self.attributions.sum()) - delta) / max(abs(delta), 1e-12)


def _path_points(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights for the integral over the path."""
    if method == "riemann_left":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if method == "riemann_middle":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs at least 2 steps")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
        return (nodes + 1) / 2, weights / 2
    raise ValueError(
        f"method must be riemann_left, riemann_middle, riemann_trapezoid or gausslegendre, "
        f"got {method!r}"
    )


def integrated_gradients(
    model: nn.Module,
    idx: Any,
    target: int,
    position: int = -1,
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 64,
    method: str = "gausslegendre",
    batch_size: int = 32,
) -> IGResult:
    """Integrated gradients (Sundararajan et al., 2017) of ``log p(target)`` over the token embeddings.

    ``a_i = (e_i - e'_i) · ∫_0^1 ∇_{e_i} f(e' + α (e - e')) dα``, the integral taken with
    ``steps`` points of ``method`` (as Captum's ``IntegratedGradients`` names them). By the
    fundamental theorem of calculus the attributions sum to ``f(e) - f(e')`` (completeness),
    up to the error of the quadrature.

    Args:
        model: the GPT.
        idx: one sequence of token ids.
        target: the token whose log-probability is explained.
        position: the position predicting it (default: the last).
        baseline: (time, n_embd) embeddings for ``e'``; default zeros (position embeddings are
            added after, so a zero token embedding still says where each position is).
        steps: points on the path.
        method: ``gausslegendre``, ``riemann_trapezoid``, ``riemann_middle`` or ``riemann_left``.
        batch_size: path points per forward/backward pass.
    """
    idx = _as_batch(idx)
    position = _check_target(model, idx, target, position)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    alphas, weights = _path_points(steps, method)
    inputs = _embedding_module(model)(idx).detach()  # (1, T, D)
    if baseline is None:
        baseline = torch.zeros_like(inputs)
    elif not isinstance(baseline, torch.Tensor) or baseline.numel() != inputs.numel():
        raise ValueError(
            f"baseline must be a tensor of shape {tuple(inputs.shape[1:])} (time, n_embd)"
        )
    baseline = baseline.detach().to(inputs).reshape(inputs.shape)
    diff = inputs - baseline
    total = torch.zeros_like(inputs)
    with torch.enable_grad():
        for start in range(0, steps, batch_size):
            a = torch.tensor(alphas[start : start + batch_size], dtype=inputs.dtype)
            w = torch.tensor(weights[start : start + batch_size], dtype=inputs.dtype)
            points = (baseline + a[:, None, None] * diff).requires_grad_(True)  # (k, T, D)
            out = logprob_from_embeddings(model, idx, points, target, position)
            (grad,) = torch.autograd.grad(out.sum(), points)
            total = total + (w[:, None, None] * grad).sum(0, keepdim=True)
    with torch.no_grad():
        ends = logprob_from_embeddings(model, idx, torch.cat([inputs, baseline]), target, position)
    return IGResult((total * diff).sum(-1)[0], float(ends[0]), float(ends[1]), steps)
