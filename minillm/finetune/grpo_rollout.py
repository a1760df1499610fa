"""GRPO's sampling and update (lesson 14): groups of completions through the KV cache, their
rewards and advantages, and one update step (the maths is in :mod:`minillm.finetune.grpo`).

Log-probabilities are those of the distribution sampled from: the logits divided by the sampling
temperature, as in ``trl``. A prompt keeps its last ``block_size - max_new_tokens`` tokens, so
that the sampler's cached decode and the loss's single forward pass see the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from minillm.finetune.grpo import GRPOConfig, GRPOLoss, group_advantages, grpo_loss
from minillm.model.sampling import cached_steps

__all__ = [
    "GRPOStats",
    "Reward",
    "Rollout",
    "grpo_step",
    "per_token_logps",
    "rollout",
    "rollout_loss",
    "sample_group",
]

Reward = Callable[[Sequence[int], Sequence[int]], float]
"""A reward: (prompt ids, completion ids up to and including its end token) -> a number."""


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
    (G, max_new_tokens): the tokens (the first of ``end_ids`` repeated once a completion ended);
    the mask, 1 up to and including the first token of ``end_ids``; and the sampling
    distribution's log-probability of each token (0 where masked).
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
