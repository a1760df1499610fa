"""Muon written out: the update rule of ``torch.optim.Muon``, one readable line per term.

Taught in lesson 05 (pretraining) next to the written-out AdamW (:mod:`minillm.train.optim`); it moves
to ``minillm/train/muon.py`` with the rest of the training stage. Muon (Jordan et al., 2024)
updates a 2-D weight matrix :math:`W` with gradient :math:`G_t` at step :math:`t` by
orthogonalising its momentum:

.. math::

    B_t &= \\mu B_{t-1} + (1 - \\mu) G_t \\\\
    M_t &= \\mu B_t + (1 - \\mu) G_t \\qquad \\text{(Nesterov; plain momentum: } M_t = B_t) \\\\
    O_t &= \\mathrm{NS}_5(M_t) \\approx U V^\\top
        \\quad \\text{where } M_t = U \\Sigma V^\\top \\\\
    W &\\leftarrow W - \\eta \\lambda W \\\\
    W &\\leftarrow W - \\eta \\sqrt{\\max(1, A / B)}\\, O_t
        \\qquad (W \\in \\mathbb{R}^{A \\times B})

:math:`\\mathrm{NS}_5` is five steps of a Newton–Schulz iteration. It starts from
:math:`X_0 = M / \\lVert M \\rVert_F` (every singular value then lies in :math:`[0, 1]`) and
applies an odd quintic polynomial, which acts on each singular value :math:`\\sigma` alone:

.. math::

    X_{k+1} = a X_k + b (X_k X_k^\\top) X_k + c (X_k X_k^\\top)^2 X_k,
    \\qquad \\sigma \\mapsto a\\sigma + b\\sigma^3 + c\\sigma^5

with :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`: the large slope :math:`a` at zero lifts the
small singular values fast, so after five steps every one above about 0.003 lies roughly in
:math:`[0.7, 1.2]` instead of exactly at 1 (which would need many more steps, and does not train
better). The
update therefore moves every direction of the matrix by about the same amount, however small its
share of the gradient; only matrix products are used, so no SVD is needed. The ratio
:math:`\\sqrt{\\max(1, A/B)}` keeps the update's size per weight similar across shapes.

Muon is for the hidden matrices of the blocks. The token embedding is a lookup table (a row
moves only when its token occurs, so treating it as one matrix mixes unrelated rows), the output
head maps to the vocabulary's probabilities, and gains and biases are vectors with no matrix
structure to orthogonalise: they stay with AdamW (:func:`split_muon_params`).

Where the defaults differ between references, this module follows ``torch.optim.Muon``
(``lr=1e-3``, ``weight_decay=0.1``, ``adjust_lr_fn="original"``, the iteration in bfloat16);
Keller Jordan's reference uses ``lr=0.02`` and ``weight_decay=0``, which
``Muon(params, lr=0.02, weight_decay=0.0)`` matches. The momentum buffer is the running mean
of the gradients, as torch's code keeps it (torch's docstring writes the sum
:math:`\\mu B + G`, which differs only by the factor :math:`1-\\mu` that the normalisation of
:math:`X_0` removes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from minillm.train.optim import adamw_update

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic's (a, b, c), from Keller Jordan's Muon (and ``torch.optim.Muon``)."""
NS_STEPS = 5
NS_EPS = 1e-7
ADJUST_LR_FNS = ("original", "match_rms_adamw")

MUON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.1,
    "momentum": 0.95,
    "nesterov": True,
    "ns_coefficients": NS_COEFFICIENTS,
    "eps": NS_EPS,
    "ns_steps": NS_STEPS,
    "adjust_lr_fn": None,
}
"""``torch.optim.Muon``'s defaults (PyTorch 2.13)."""
ADAMW_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.01,
}
"""``torch.optim.AdamW``'s defaults, for the AdamW groups of :class:`MuonAdamW`."""


def newton_schulz(
    grad: torch.Tensor,
    *,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Orthogonalise a matrix: about ``U @ V.T`` of its SVD, from ``steps`` quintic iterations.

    Returned in ``dtype`` (bfloat16 as torch: the iteration tolerates its rounding). The
    operations and their order are torch's, so the result is the same to the last bit.
    """
    if grad.ndim != 2:
        raise ValueError(
            f"Newton-Schulz orthogonalises 2-D matrices, got shape {tuple(grad.shape)}"
        )
    if not 0 < steps < 100:
        raise ValueError(f"steps must lie in [1, 99], got {steps}")
    a, b, c = coefficients
    x = grad.to(dtype)
    tall = grad.size(0) > grad.size(1)
    if tall:  # iterate on the wide orientation: X Xᵀ is then the smaller Gram matrix
        x = x.T
    x = x / x.norm().clamp(min=eps)  # ‖X‖₂ ≤ ‖X‖_F = 1: every singular value in [0, 1]
    for _ in range(steps):
        gram = x @ x.T  # A = X Xᵀ
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # B = b A + c A²
        x = torch.addmm(x, poly, x, beta=a)  # X = a X + B X
    return x.T if tall else x


def adjusted_lr(lr: float, shape: torch.Size | tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """The learning rate for a matrix of ``shape`` (rows A = outputs, columns B = inputs).

    ``"original"`` (or None): ``lr·√max(1, A/B)`` (Keller Jordan's); ``"match_rms_adamw"``:
    ``0.2·lr·√max(A, B)`` (Moonshot's, so AdamW's learning rate and weight decay carry over).
    """
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS} or None, got {adjust_lr_fn!r}")


@torch.no_grad()
def muon_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor,
    *,
    lr: float,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = NS_STEPS,
    eps: float = NS_EPS,
    adjust_lr_fn: str | None = None,
) -> None:
    """One Muon step for one 2-D matrix, in place (``momentum_buffer``, zeros at first, too)."""
    momentum_buffer.lerp_(grad, 1 - momentum)  # B = μ B + (1 - μ) G
    update = grad.lerp(momentum_buffer, momentum) if nesterov else momentum_buffer  # μ B + (1-μ) G
    ortho = newton_schulz(update, steps=ns_steps, coefficients=ns_coefficients, eps=eps)
    param.mul_(1 - lr * weight_decay)  # decoupled weight decay, with the unadjusted rate
    param.add_(ortho, alpha=-adjusted_lr(lr, param.shape, adjust_lr_fn))


def _check_muon_group(group: dict[str, Any]) -> None:
    for name in ("lr", "momentum", "weight_decay"):
        value = group[name]
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"Muon's {name} must be a finite number >= 0, got {value}")
    fn = group["adjust_lr_fn"]
    if fn is not None and fn not in ADJUST_LR_FNS:
        raise ValueError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS} or None, got {fn!r}")
    for p in group["params"]:
        if p.ndim != 2:
            raise ValueError(
                f"Muon takes 2-D matrices only, got a parameter of shape {tuple(p.shape)}"
            )


def _muon_step(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> None:
    for p in group["params"]:
        if p.grad is None:
            continue
        state = optimizer.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        muon_update(
            p,
            p.grad,
            state["momentum_buffer"],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_coefficients=tuple(group["ns_coefficients"]),
            ns_steps=group["ns_steps"],
            eps=group["eps"],
            adjust_lr_fn=group["adjust_lr_fn"],
        )


class Muon(torch.optim.Optimizer):
    """A small Muon around :func:`muon_update`, with ``torch.optim.Muon``'s arguments and defaults.

    Every parameter must be a 2-D matrix; give the rest to AdamW (:func:`split_muon_params`).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = NS_EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_muon_group(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            _muon_step(self, group)
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon on some parameter groups, AdamW (:func:`minillm.train.optim.adamw_update`) on the others.

    Each group names its ``kind``, ``"muon"`` or ``"adamw"``, and takes that kind's defaults
    (:data:`MUON_DEFAULTS`, :data:`ADAMW_DEFAULTS`) for the settings it leaves out. One optimizer
    rather than two, so the training loop's schedule, clipping, loss scaler and checkpoints
    (``state_dict``/``load_state_dict``) work unchanged.
    """

    KINDS = {"muon": MUON_DEFAULTS, "adamw": ADAMW_DEFAULTS}

    def __init__(self, param_groups: Iterable[dict[str, Any]]) -> None:
        super().__init__(list(param_groups), {})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict) or param_group.get("kind") not in self.KINDS:
            raise ValueError(
                f"every MuonAdamW group needs kind='muon' or 'adamw', got "
                f"{param_group.get('kind') if isinstance(param_group, dict) else param_group!r}"
            )
        for name, default in self.KINDS[param_group["kind"]].items():
            param_group.setdefault(name, default)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["kind"] == "muon":
            _check_muon_group(group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "muon":
                _muon_step(self, group)
                continue
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(
                        step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p)
                    )
                state["step"] += 1
                adamw_update(
                    p,
                    p.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["step"],
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                )
        return loss


def split_muon_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a model's trainable parameters into (Muon's, AdamW's); each lands in exactly one.

    Muon's: the weights of the ``nn.Linear`` layers inside the model (in a GPT, the attention's
    and the MLP's matrices in every block). AdamW's: everything else — the embeddings (lookup
    tables: only the rows of tokens in the batch get a gradient), the output head ``lm_head``
    (it scores the vocabulary; with tied weights it *is* the token embedding), the norms' gains
    and all biases (vectors). This is the split of Keller Jordan's and nanochat's recipes.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    not_muon = {
        id(module.weight)
        for name, module in model.named_modules()
        if isinstance(module, nn.Embedding) or name.split(".")[-1] == "lm_head"
    }
    muon_ids = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, nn.Linear) and id(module.weight) not in not_muon
    }
    muon = [p for p in params if id(p) in muon_ids and p.ndim == 2]
    adamw = [p for p in params if id(p) not in {id(q) for q in muon}]
    return muon, adamw


def muon_adamw_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    muon_lr: float,
) -> list[dict[str, Any]]:
    """:class:`MuonAdamW`'s groups for a GPT: AdamW (decayed matrices, undecayed vectors), Muon.

    The AdamW groups come first, as in the plain AdamW optimizer, so group 0's rate is still
    ``learning_rate``'s. Muon shares ``weight_decay`` (decoupled, scaled by its own rate).
    """
    muon, adamw = split_muon_params(model)
    adamw_settings = {"kind": "adamw", "lr": learning_rate, "betas": betas}
    return [
        {
            **adamw_settings,
            "params": [p for p in adamw if p.ndim >= 2],
            "weight_decay": weight_decay,
        },
        {**adamw_settings, "params": [p for p in adamw if p.ndim < 2], "weight_decay": 0.0},
        {"kind": "muon", "params": muon, "lr": muon_lr, "weight_decay": weight_decay},
    ]
