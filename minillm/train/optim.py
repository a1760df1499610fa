"""AdamW written out: the update rule of ``torch.optim.AdamW``, one readable line per term.

Taught in lesson 05 (pretraining), which checks it against ``torch.optim.AdamW`` before the
training loop uses torch's fused version (:func:`minillm.train.configure_optimizer`). For each
parameter :math:`\\theta` with gradient :math:`g_t` at step :math:`t`:

.. math::

    \\theta &\\leftarrow \\theta - \\eta \\lambda \\theta \\\\
    m_t &= \\beta_1 m_{t-1} + (1 - \\beta_1) g_t \\\\
    v_t &= \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2 \\\\
    \\theta &\\leftarrow \\theta - \\frac{\\eta}{1 - \\beta_1^t}
        \\frac{m_t}{\\sqrt{v_t} / \\sqrt{1 - \\beta_2^t} + \\epsilon}

The decay (first line) is *decoupled*: it shrinks the weights directly instead of being added to
the gradient, so Adam's per-weight scaling does not weaken it (Loshchilov and Hutter, 2019).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


@torch.no_grad()
def adamw_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> None:
    """One AdamW step for one tensor, in place; ``step`` counts from 1.

    ``exp_avg`` and ``exp_avg_sq`` are the running averages of the gradient and of its square
    (zeros before the first step); they are updated in place too.
    """
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    param.mul_(1 - lr * weight_decay)  # decoupled weight decay
    exp_avg.lerp_(grad, 1 - beta1)  # m = beta1 * m + (1 - beta1) * g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = beta2 v + (1 - beta2) g²
    bias_correction1 = 1 - beta1**step  # early averages lean toward their zero start
    bias_correction2 = 1 - beta2**step
    denominator = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    param.addcdiv_(exp_avg, denominator, value=-lr / bias_correction1)


class WrittenOutAdamW:
    """A minimal optimizer around :func:`adamw_update`: ``step()`` and ``zero_grad()``.

    It takes a plain list of parameters and one set of hyper-parameters (no groups), which is
    all the lesson needs to compare it with ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("WrittenOutAdamW needs at least one parameter that requires grad")
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        self.steps += 1
        for param, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if param.grad is None:
                continue
            adamw_update(
                param,
                param.grad,
                m,
                v,
                self.steps,
                lr=self.lr,
                beta1=self.betas[0],
                beta2=self.betas[1],
                eps=self.eps,
                weight_decay=self.weight_decay,
            )

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None
