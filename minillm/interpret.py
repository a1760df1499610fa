"""Looking inside a trained GPT: attention, head scores, the logit lens, attribution, patching, probes.

Taught in lesson 13 (interpretability). Every reading here comes from the model's own forward
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "attention_maps",
    "head_scores",
    "attention_rollout",
    "ablate_heads",
    "residual_stream",
    "logit_lens",
    "lens_scores",
    "target_logprob",
    "logprob_from_embeddings",
    "gradient_x_input",
    "IGResult",
    "integrated_gradients",
    "patch_residual",
    "patching_sweep",
    "probe_layers",
    "ProbeResult",
    "bits_per_byte",
]

HEAD_SCORES = ("previous token", "first token", "duplicate token", "local window")
"""The head scores :func:`head_scores` returns, in order."""


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


# ---------------------------------------------------------------------------------------------
# The residual stream and the logit lens
# ---------------------------------------------------------------------------------------------


def residual_stream(model: nn.Module, idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream after the embeddings and after each block.

    Returns:
        ``(stream, logits)``: stream (n_layer + 1, batch, time, n_embd), entry 0 the embeddings
        (token plus position), entry ``l`` the output of block ``l``; logits of the same pass.
    """
    idx = _as_batch(idx)
    modules = _stream_modules(model)
    states: list[torch.Tensor | None] = [None] * len(modules)

    def hook_for(i: int) -> Callable[..., None]:
        def record(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            states[i] = output

        return record

    with _forward_hooks([(m, hook_for(i)) for i, m in enumerate(modules)]):
        logits = _logits(model, idx)
    return torch.stack(states), logits  # type: ignore[arg-type]


def logit_lens(model: nn.Module, idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every layer's residual stream out as next-token logits (nostalgebraist, 2020).

    ``lens_l = W_U · norm_f(h_l)``: the final norm and the output matrix applied to the stream
    after layer ``l`` as if the remaining blocks were skipped. The last entry is the model's own
    output.

    Returns:
        ``(lens, logits)``: lens (n_layer + 1, batch, time, vocab), logits (batch, time, vocab).
    """
    stream, logits = residual_stream(model, idx)
    return model.lm_head(model.transformer.ln_f(stream)), logits


@torch.no_grad()
def lens_scores(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> dict[str, Any]:
    """Score the logit lens of every layer as a next-token predictor.

    Args:
        model: the GPT.
        windows: (n, T + 1) token ids; the first ``T`` are read, the last ``T`` are the targets.
        batch_size: windows per forward pass.

    Returns:
        A dict: ``nll_sum``, the summed cross-entropy in nats of each read-out (n_layer + 1
        numbers, layer 0 the embeddings); ``correct``, its top-1 hits; ``tokens``, the number of
        targets scored (numpy arrays).
    """
    windows = _as_batch(windows)
    if windows.shape[1] < 2:
        raise ValueError(
            f"windows need at least 2 tokens (input and target), got {windows.shape[1]}"
        )
    nll_sum = correct = None
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        lens, _ = logit_lens(model, chunk[:, :-1])
        targets = chunk[:, 1:].expand(lens.shape[0], -1, -1)  # (L + 1, B, T)
        nll = F.cross_entropy(lens.flatten(0, 2).float(), targets.flatten(), reduction="none")
        nll = nll.view(targets.shape).sum((1, 2))
        hits = (lens.argmax(-1) == targets).sum((1, 2))
        nll_sum = nll if nll_sum is None else nll_sum + nll
        correct = hits if correct is None else correct + hits
    return {
        "nll_sum": nll_sum.double().numpy(),
        "correct": correct.numpy(),
        "tokens": int(windows[:, 1:].numel()),
    }


# ---------------------------------------------------------------------------------------------
# Attribution: gradient x input and integrated gradients
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Activation patching
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Linear probes
# ---------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """Held-out accuracy of a logistic-regression probe per layer, beside its controls.

    Attributes:
        accuracy: (n_layers,) with the true labels.
        control: (n_layers,) with the training labels shuffled (what the probe can learn from
            structure in the features alone).
        majority: accuracy of always answering the most common training label.
    """

    accuracy: np.ndarray
    control: np.ndarray
    majority: float


def probe_layers(
    features: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    *,
    groups: Sequence[int] | np.ndarray | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_iter: int = 2000,
) -> ProbeResult:
    """Fit a logistic-regression probe on each layer's features and score it on held-out rows.

    The rows are split once (the same split for every layer); with ``groups`` (for example the
    line each token came from) whole groups go to one side, so a probe cannot pass by
    recognising a line it saw. Features are standardised on the training rows. The control
    fits the same probe to shuffled training labels.

    Args:
        features: (n_layers, n_rows, dim).
        labels: (n_rows,) integer classes.
        groups: optional (n_rows,) group ids for the split.
        test_fraction: share of rows (or groups) held out.
        seed: the split and the shuffle.
        max_iter: iterations for scikit-learn's solver.
    """
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as err:  # pragma: no cover - scikit-learn is in the course extra
        raise ImportError("linear probes need scikit-learn: pip install -e '.[course]'") from err
    x = (
        features.detach().float().numpy()
        if isinstance(features, torch.Tensor)
        else np.asarray(features)
    )
    y = np.asarray(labels)
    if x.ndim != 3 or x.shape[1] != len(y):
        raise ValueError(
            f"features must be (n_layers, n_rows, dim) with n_rows = len(labels) = {len(y)}, "
            f"got {x.shape}"
        )
    if len(np.unique(y)) < 2:
        raise ValueError("labels must contain at least two classes")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if groups is None:
        splitter = StratifiedShuffleSplit(1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(x[0], y))
    else:
        splitter = GroupShuffleSplit(1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(x[0], y, np.asarray(groups)))
    shuffled = np.random.default_rng(seed).permutation(y[train])
    values, counts = np.unique(y[train], return_counts=True)
    majority = float(np.mean(y[test] == values[counts.argmax()]))

    def fit_score(layer: np.ndarray, train_labels: np.ndarray) -> float:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        probe.fit(layer[train], train_labels)
        return float(probe.score(layer[test], y[test]))

    accuracy = np.array([fit_score(layer, y[train]) for layer in x])
    control = np.array([fit_score(layer, shuffled) for layer in x])
    return ProbeResult(accuracy, control, majority)


def bits_per_byte(nll_sum: float | np.ndarray, n_bytes: int) -> float | np.ndarray:
    """Summed cross-entropy in nats turned into bits per UTF-8 byte of the scored text."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return np.asarray(nll_sum) / math.log(2) / n_bytes
