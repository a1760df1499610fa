r"""Group relative policy optimisation (GRPO; Shao et al. 2024, DeepSeekMath), from scratch.

Reinforcement learning from a verifiable reward (lesson 14). For each prompt :math:`q` the policy
:math:`\pi_\theta` samples a *group* of :math:`G` completions :math:`o_1, \dots, o_G`; a program
scores each one, :math:`r_i`; and each completion's advantage is its reward measured against its
own group, so no value network is needed:

.. math::

    A_i = \frac{r_i - \operatorname{mean}(r_1, \dots, r_G)}{\operatorname{std}(r_1, \dots, r_G)
    + \varepsilon_A}

with the *sample* standard deviation (Bessel's :math:`G - 1`) and :math:`\varepsilon_A = 10^{-4}`,
as ``trl`` does (``scale="none"`` drops the division, as Dr. GRPO recommends). Every response token
:math:`t` of :math:`o_i` gets the same :math:`A_i`, and the loss is PPO's clipped surrogate with a
KL penalty to a frozen reference :math:`\pi_{\text{ref}}`:

.. math::

    \rho_{i,t} = \frac{\pi_\theta(o_{i,t} \mid q, o_{i,<t})}
                      {\pi_{\theta_\text{old}}(o_{i,t} \mid q, o_{i,<t})}, \qquad
    \ell_{i,t} = -\min\bigl(\rho_{i,t} A_i,\;
                 \operatorname{clip}(\rho_{i,t}, 1 - \epsilon, 1 + \epsilon) A_i\bigr)
                 + \beta\, \mathrm{KL}_{i,t}

where the KL term is the "k3" estimator (Schulman 2020), unbiased and never negative:

.. math::

    \mathrm{KL}_{i,t} = e^{\log\pi_\text{ref} - \log\pi_\theta}
                        - (\log\pi_\text{ref} - \log\pi_\theta) - 1 .

Only response tokens count (the mask :math:`m_{i,t}` is 1 up to and including the end token). The
per-token losses become one number in one of three ways (``loss_type``, ``trl``'s names):

.. math::

    \text{grpo: } \frac{1}{N}\sum_i \frac{\sum_t m_{i,t}\ell_{i,t}}{\sum_t m_{i,t}}, \qquad
    \text{bnpo: } \frac{\sum_{i,t} m_{i,t}\ell_{i,t}}{\sum_{i,t} m_{i,t}}, \qquad
    \text{dr\_grpo: } \frac{\sum_{i,t} m_{i,t}\ell_{i,t}}{N \cdot L_\text{max}}

(:math:`N` completions in the batch, :math:`L_\text{max}` the longest allowed completion).
``grpo`` is the paper's; it favours short right answers and long wrong ones, which the other two
remove. The sampler, the rollout and the update are in :mod:`minillm.finetune.grpo_rollout`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "LOSS_TYPES",
    "SCALES",
    "GRPOConfig",
    "GRPOLoss",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
]

LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo")
SCALES: tuple[str, ...] = ("group", "batch", "none")


@dataclass(frozen=True)
class GRPOConfig:
    """The settings of one GRPO update (``trl``'s differing defaults in brackets).

    Attributes:
        group_size: completions per prompt, :math:`G` (trl ``num_generations``: 8).
        max_new_tokens: the longest completion, :math:`L_\\text{max}`.
        temperature: sampling temperature (> 0).
        epsilon: clip range :math:`\\epsilon` (trl 0.2, the same); ``epsilon_high`` defaults to it.
        beta: KL coefficient (trl 0.0: no reference model).
        loss_type: ``grpo``, ``bnpo`` or ``dr_grpo`` (trl ``dapo``, which on one process without
            gradient accumulation is ``bnpo``).
        scale: advantage scaling, ``group``, ``batch`` or ``none`` (trl ``scale_rewards="group"``).
        num_iterations: updates per sampled batch, :math:`\\mu` (trl 1, the same).
        kl_times_ratio: multiply the KL term by :math:`\\rho` (trl ``use_bias_correction_kl=True``).
        end_ids: the tokens that end a completion (the first one kept and masked in, the rest
            masked out); for a line, every token whose text holds a newline.
    """

    group_size: int = 8
    max_new_tokens: int = 24
    temperature: float = 1.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    loss_type: str = "grpo"
    scale: str = "group"
    num_iterations: int = 1
    kl_times_ratio: bool = False
    end_ids: tuple[int, ...] = ()
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("group_size", "max_new_tokens", "num_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (one completion has no group), got {self.group_size}"
            )
        for name in ("temperature", "epsilon", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.epsilon_high is not None and not self.epsilon_high > 0:
            raise ValueError(f"epsilon_high must be positive or None, got {self.epsilon_high!r}")
        if not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(
                f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {self.loss_type!r}"
            )
        if not isinstance(self.end_ids, tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.end_ids
        ):
            raise ValueError(f"end_ids must be a tuple of token ids, got {self.end_ids!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {self.scale!r}")


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    r"""Advantages :math:`A_i = (r_i - \bar r_{\text{group}}) / (s + \varepsilon)` of flat rewards.

    ``rewards`` (N,) holds N / ``group_size`` groups one after another. ``s`` is the sample
    standard deviation of the group (``scale="group"``), of the whole batch (``"batch"``), or 1
    with no :math:`\varepsilon` (``"none"``). A group whose rewards are all equal gets zeros.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size or rewards.numel() < group_size:
        raise ValueError(
            f"rewards must be a flat tensor of whole groups of {group_size}, "
            f"got {tuple(rewards.shape)}"
        )
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    grouped = rewards.float().view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1, unbiased=True).repeat_interleave(group_size)
    else:
        std = rewards.float().std(unbiased=True).expand_as(centred)
    return centred / (std + eps)


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    r"""The per-token k3 estimate of :math:`\mathrm{KL}(\pi_\theta \| \pi_\text{ref})`:
    :math:`e^{\delta} - \delta - 1` with :math:`\delta = \log\pi_\text{ref} - \log\pi_\theta`."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


@dataclass
class GRPOLoss:
    """The loss and what to watch: mean KL and the share of clipped tokens (masked means)."""

    loss: torch.Tensor
    kl: float
    clip_fraction: float


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    kl_times_ratio: bool = False,
) -> GRPOLoss:
    """The clipped GRPO loss over response tokens (see the module's formulas).

    Args:
        logps, old_logps, ref_logps: (N, L) per-token log-probabilities under the policy being
            trained (with gradient), the policy that sampled, and the reference (needed if
            ``beta`` > 0).
        advantages: (N,) one per completion.
        mask: (N, L) 1 on response tokens, 0 after the end token.
        max_completion_length: :math:`L_\\text{max}` for ``dr_grpo`` (default: L).
    """
    if logps.shape != old_logps.shape or logps.shape != mask.shape or logps.dim() != 2:
        raise ValueError(
            f"logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)} and mask "
            f"{tuple(mask.shape)} must be one (N, L) shape"
        )
    if advantages.shape != logps.shape[:1]:
        raise ValueError(f"advantages must be ({logps.shape[0]},), got {tuple(advantages.shape)}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")
    if beta > 0 and (ref_logps is None or ref_logps.shape != logps.shape):
        raise ValueError("beta > 0 needs ref_logps of the same (N, L) shape as logps")
    mask = mask.to(logps.dtype)
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + high) * adv)
    kl = torch.zeros_like(logps)
    if beta > 0:
        kl = kl_k3(logps, ref_logps)
        per_token = per_token + beta * (kl * ratio if kl_times_ratio else kl)
    masked = per_token * mask
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked.sum() / mask.sum().clamp(min=1.0)
    else:
        length = logps.shape[1] if max_completion_length is None else max_completion_length
        loss = masked.sum() / (logps.shape[0] * length)
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1.0)
        clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        stats = float((kl * mask).sum() / tokens), float((clipped * mask).sum() / tokens)
    return GRPOLoss(loss, *stats)
