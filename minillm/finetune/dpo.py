"""Direct preference optimisation (DPO; Rafailov et al. 2023), from scratch (lesson 08).

For a prompt ``x`` with a preferred answer ``y_w`` and a rejected one ``y_l``, DPO trains the
policy ``π_θ`` against a frozen reference ``π_ref`` (the model before DPO) with::

    L = -log σ(β [(log π_θ(y_w|x) - log π_ref(y_w|x)) - (log π_θ(y_l|x) - log π_ref(y_l|x))])

where ``log π(y|x)`` is the *sum* of the answer tokens' log-probabilities. β sets how far the
policy may move from the reference. This is ``trl``'s ``loss_type="sigmoid"`` (its default);
the tests check the two give the same value on the same log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minillm.finetune.sft import collate

__all__ = ["sequence_logprobs", "dpo_loss", "DPOOutput", "preference_batch"]


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of ``log p(target)`` over the positions whose target is not -100, per sequence.

    Args:
        logits: (B, T, V) model outputs.
        targets: (B, T) next-token targets, -100 where the position is not scored.

    Returns:
        (B,) summed log-probabilities (float32).
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must share (B, T)"
        )
    keep = targets != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(dim=1)


@dataclass
class DPOOutput:
    """The mean loss and, per pair, the implicit rewards ``β (log π_θ - log π_ref)``."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        """Chosen minus rejected reward, per pair (positive: the preference is respected)."""
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> DPOOutput:
    """The DPO loss from sequence log-probabilities (each (B,)), averaged over pairs.

    Raises:
        ValueError: shapes differ or ``beta`` is not positive.
    """
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta <= 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape, got {shapes}")
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return DPOOutput(loss, beta * chosen.detach(), beta * rejected.detach())


def preference_batch(chat, pairs: Sequence, pad_id: int, max_len: int | None = None):
    """Encode preference pairs: ``(ids, targets)`` with the B chosen rows first, then B rejected.

    Args:
        chat: a :class:`minillm.finetune.sft.ChatFormat`.
        pairs: objects with ``prompt``, ``chosen`` and ``rejected`` strings
            (:class:`minillm.finetune.instructions.PreferencePair`).
    """

    if not pairs:
        raise ValueError("preference_batch needs at least one pair")
    encoded = [chat.example(p.prompt, p.chosen) for p in pairs]
    encoded += [chat.example(p.prompt, p.rejected) for p in pairs]
    ids, targets, _ = collate(encoded, pad_id, max_len=max_len)
    return ids, targets
