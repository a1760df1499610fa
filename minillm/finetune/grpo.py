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

    \text{grpo: } \frac{1}{G}\sum_i \frac{\sum_t m_{i,t}\ell_{i,t}}{\sum_t m_{i,t}}, \qquad
    \text{bnpo: } \frac{\sum_{i,t} m_{i,t}\ell_{i,t}}{\sum_{i,t} m_{i,t}}, \qquad
    \text{dr\_grpo: } \frac{\sum_{i,t} m_{i,t}\ell_{i,t}}{N \cdot L_\text{max}}

(:math:`N` completions in the batch, :math:`L_\text{max}` the longest allowed completion).
``grpo`` is the paper's; it favours short right answers and long wrong ones, which the other two
remove. Log-probabilities are those of the distribution sampled from: the logits divided by the
sampling temperature, as in ``trl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from minillm.model.sampling import cached_steps

__all__ = [
    "LOSS_TYPES",
    "SCALES",
    "GRPOConfig",
    "GRPOLoss",
    "GRPOStats",
    "Rollout",
    "group_advantages",
    "grpo_loss",
    "grpo_step",
    "kl_k3",
    "per_token_logps",
    "rollout",
    "rollout_loss",
    "sample_group",
]

LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo")
SCALES: tuple[str, ...] = ("group", "batch", "none")
Reward = Callable[[Sequence[int], Sequence[int]], float]  # (prompt ids, completion ids) -> reward


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
            f"rewards must be a flat tensor of whole groups of {group_size}, got {tuple(rewards.shape)}"
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
    r"""Per-token :math:`e^{\log\pi_\text{ref} - \log\pi_\theta} - (\log\pi_\text{ref} - \log\pi_\theta) - 1`."""
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


def per_token_logps(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """(N, L) log-probabilities of each completion token after one prompt (1, P) or (N, P).

    One forward pass over prompt + completion; the logits are divided by ``temperature``.
    """
    n = completion_ids.shape[0]
    prompt = prompt_ids.expand(n, -1) if prompt_ids.shape[0] == 1 else prompt_ids
    p = prompt.shape[1]
    ids = torch.cat([prompt, completion_ids[:, :-1]], dim=1)
    logits = model(ids)[0][:, p - 1 :].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sample_group(
    model: nn.Module,
    prompt_ids: Sequence[int],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    end_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``group_size`` completions of one prompt through the KV cache.

    The prompt keeps its last ``block_size - max_new_tokens`` tokens, so that prompt and
    completion fit one forward pass (the loss's). Returns ``(ids, mask, logps)``, each
    (G, max_new_tokens): the tokens (the first of ``end_ids`` repeated after a completion ended),
    1 up to and including the first token of ``end_ids``, and the sampling distribution's log-probability of each token
    (0 where masked).
    """
    room = model.config.block_size - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {model.config.block_size} tokens"
        )
    if not len(prompt_ids):
        raise ValueError("the prompt is empty")
    was_training = model.training
    model.eval()
    context = torch.tensor([list(prompt_ids)[-room:]] * group_size, dtype=torch.long)
    ids = torch.zeros(group_size, max_new_tokens, dtype=torch.long)
    logps = torch.zeros(group_size, max_new_tokens)
    alive = torch.ones(group_size, dtype=torch.bool)
    mask = torch.zeros(group_size, max_new_tokens)
    ends = torch.tensor(list(end_ids), dtype=torch.long)
    fill = int(ends[0]) if len(ends) else 0
    try:
        steps = cached_steps(model, context)
        logits = next(steps)
        for t in range(max_new_tokens):
            logp = torch.log_softmax(logits.float() / temperature, dim=-1)
            token = torch.multinomial(logp.exp(), 1, generator=generator)  # (G, 1)
            token[~alive] = fill
            ids[:, t] = token[:, 0]
            logps[:, t] = logp.gather(-1, token)[:, 0] * alive
            mask[:, t] = alive.float()
            if len(ends):
                alive &= ~torch.isin(token[:, 0], ends)
            if t < max_new_tokens - 1 and bool(alive.any()):
                logits = steps.send(token)
            elif not bool(alive.any()):
                ids[:, t + 1 :] = fill
                break
    finally:
        model.train(was_training)
    return ids, mask, logps


@dataclass
class Rollout:
    """A batch of groups: B prompts, G completions each, flattened to N = B * G rows."""

    prompts: list[torch.Tensor]  # B prompts, each (1, P_b) as sampled (truncated)
    ids: torch.Tensor  # (N, L)
    mask: torch.Tensor  # (N, L)
    old_logps: torch.Tensor  # (N, L)
    rewards: torch.Tensor  # (N,)
    advantages: torch.Tensor  # (N,)
    group_size: int


def rollout(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    reward: Reward,
    config: GRPOConfig,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample a group per prompt, score each completion (its tokens up to and including the end
    token, when it has one), and compute the group advantages."""
    if not prompts:
        raise ValueError("rollout needs at least one prompt")
    room = model.config.block_size - config.max_new_tokens
    kept, ids, masks, logps, rewards = [], [], [], [], []
    for prompt in prompts:
        g_ids, g_mask, g_logps = sample_group(
            model, prompt, config.group_size, config.max_new_tokens, config.temperature,
            config.end_ids, generator,
        )  # fmt: skip
        kept.append(torch.tensor([list(prompt)[-room:]], dtype=torch.long))
        for row, row_mask in zip(g_ids, g_mask, strict=True):
            rewards.append(float(reward(list(prompt), row[: int(row_mask.sum())].tolist())))
        ids.append(g_ids)
        masks.append(g_mask)
        logps.append(g_logps)
    r = torch.tensor(rewards)
    return Rollout(
        kept, torch.cat(ids), torch.cat(masks), torch.cat(logps), r,
        group_advantages(r, config.group_size, config.scale), config.group_size,
    )  # fmt: skip


def _batch_logps(model: nn.Module, batch: Rollout, temperature: float) -> torch.Tensor:
    g = batch.group_size
    return torch.cat(
        [
            per_token_logps(model, prompt, batch.ids[i * g : (i + 1) * g], temperature)
            for i, prompt in enumerate(batch.prompts)
        ]
    )


def rollout_loss(
    policy: nn.Module,
    reference: nn.Module | None,
    batch: Rollout,
    config: GRPOConfig,
    old_logps: torch.Tensor | None = None,
) -> GRPOLoss:
    """:func:`grpo_loss` of a rollout under ``policy`` (with gradient), against ``reference``."""
    logps = _batch_logps(policy, batch, config.temperature)
    ref = None
    if config.beta > 0:
        if reference is None:
            raise ValueError("beta > 0 needs a reference model")
        with torch.no_grad():
            ref = _batch_logps(reference, batch, config.temperature)
    return grpo_loss(
        logps,
        batch.old_logps if old_logps is None else old_logps,
        batch.advantages,
        batch.mask,
        ref,
        beta=config.beta,
        epsilon=config.epsilon,
        epsilon_high=config.epsilon_high,
        loss_type=config.loss_type,
        max_completion_length=config.max_new_tokens,
        kl_times_ratio=config.kl_times_ratio,
    )


@dataclass
class GRPOStats:
    """One :func:`grpo_step`: the mean reward sampled, the last loss, KL and clipped share."""

    reward: float
    loss: float
    kl: float
    clip_fraction: float


def grpo_step(
    policy: nn.Module,
    reference: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[Sequence[int]],
    reward: Reward,
    config: GRPOConfig,
    generator: torch.Generator | None = None,
) -> GRPOStats:
    """One GRPO update: sample and score groups, then ``num_iterations`` clipped-loss steps.

    The sampling policy's log-probabilities are recorded once (:math:`\\pi_{\\theta_\\text{old}}`);
    with one iteration the ratio is 1 (up to the cached decode's rounding), so the clip only
    binds from the second iteration on, as in ``trl``.
    """
    batch = rollout(policy, prompts, reward, config, generator)
    params = [p for p in policy.parameters() if p.requires_grad]
    out = None
    for _ in range(config.num_iterations):
        out = rollout_loss(policy, reference, batch, config)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"the GRPO loss is {float(out.loss)}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
    assert out is not None
    return GRPOStats(
        float(batch.rewards.mean()), float(out.loss.detach()), out.kl, out.clip_fraction
    )
