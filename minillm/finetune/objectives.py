"""Fine-tuning the course model: the loop, answer scoring, a classification head, forgetting.

Taught in lesson 08 (fine-tuning). The parts live in their own modules and are re-exported here:

- :mod:`minillm.finetune.lora`: ``LoRALinear``, ``apply_lora``, ``merge_lora``, peft-layout adapters;
- :mod:`minillm.finetune.sft`: chat tokens and template, loss masks, ``collate``;
- :mod:`minillm.finetune.dpo`: ``dpo_loss``, ``sequence_logprobs``;
- :mod:`minillm.finetune.instructions`: the instruction set made from the plays, split by play.

This module holds what ties them together: :func:`train_steps` (one loop for full fine-tuning,
LoRA, SFT and DPO: it optimises whatever parameters require gradients), :func:`answer_exact_match`
(greedy exact match in one batched forward pass), :class:`SequenceClassifier` (a linear head on
the last real token, padding-side invariant) and :func:`forgetting` (validation bits per byte on
the pretraining text, before and after).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from minillm.finetune.dpo import DPOOutput, dpo_loss, preference_batch, sequence_logprobs
from minillm.finetune.lora import LoRAConfig, LoRALinear, apply_lora, count_parameters, merge_lora
from minillm.finetune.sft import (
    CHAT_TOKENS,
    ChatFormat,
    add_chat_tokens,
    collate,
    masked_cross_entropy,
)
from minillm.train.schedule import configure_optimizer

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "merge_lora",
    "count_parameters",
    "ChatFormat",
    "CHAT_TOKENS",
    "add_chat_tokens",
    "collate",
    "masked_cross_entropy",
    "dpo_loss",
    "DPOOutput",
    "sequence_logprobs",
    "preference_batch",
    "TrainLog",
    "train_steps",
    "sft_loss",
    "answer_exact_match",
    "SequenceClassifier",
    "last_token_index",
]


@dataclass
class TrainLog:
    """What :func:`train_steps` did: loss per step, seconds, trainable parameters."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable: int = 0
    peak_memory_bytes: int | None = None


def train_steps(
    model: nn.Module,
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    warmup: int = 0,
    grad_clip: float = 1.0,
) -> TrainLog:
    """AdamW on the parameters of ``model`` that require gradients, for ``steps`` steps.

    ``loss_fn(step)`` builds a batch and returns its loss, so the same loop serves every method:
    freeze parameters (or add adapters) to choose *what* is trained. The learning rate warms up
    linearly for ``warmup`` steps and then decays with a cosine to 10% of ``lr``.

    Raises:
        ValueError: no parameter requires gradients, or bad sizes.
    """
    import math

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    trainable, _ = count_parameters(model)
    if trainable == 0:
        raise ValueError("no parameter of the model requires gradients: nothing to train")
    device = next(model.parameters()).device
    optimizer = configure_optimizer(
        model, learning_rate=lr, weight_decay=weight_decay, device_type=device.type
    )
    params = [p for p in model.parameters() if p.requires_grad]
    log = TrainLog(trainable=trainable)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    was_training = model.training
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        if step < warmup:
            scale = (step + 1) / warmup
        else:
            progress = (step - warmup) / max(1, steps - warmup)
            scale = 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        log.losses.append(float(loss.detach()))
    log.seconds = time.perf_counter() - start
    if device.type == "cuda":
        log.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    model.train(was_training)
    return log


def sft_loss(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Masked next-token cross-entropy of a :func:`minillm.finetune.sft.collate` batch."""
    logits, _ = model(ids)
    return masked_cross_entropy(logits, targets)


@torch.no_grad()
def answer_exact_match(
    model: nn.Module, ids: torch.Tensor, targets: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Per example 1.0 if greedy decoding reproduces every target token, else 0.0.

    With teacher forcing, a position's argmax equals its target exactly when greedy decoding,
    having produced the targets so far, would produce this one next; so "every scored position's
    argmax is its target" is "greedy decoding writes the answer and then its stop token", computed
    in one forward pass instead of one per generated token.

    Args:
        ids, targets: a batch from :func:`minillm.finetune.sft.collate` (targets -100 outside the answer).

    Returns:
        (B,) float tensor of 0/1.
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, ids.shape[0], batch_size):
        x, y = ids[start : start + batch_size], targets[start : start + batch_size]
        logits, _ = model(x)
        keep = y != -100
        hit = (logits.argmax(-1) == y) | ~keep
        out.append(hit.all(dim=1).float())
    model.train(was_training)
    return torch.cat(out)


def last_token_index(attention: torch.Tensor) -> torch.Tensor:
    """Index of the last real (attention 1) position of each row, for left or right padding."""
    if attention.dim() != 2:
        raise ValueError(f"attention must be (batch, time), got {tuple(attention.shape)}")
    if bool((attention.sum(1) == 0).any()):
        raise ValueError("a row of the attention mask has no real token")
    T = attention.shape[1]
    return T - 1 - attention.flip(1).argmax(1)


class SequenceClassifier(nn.Module):
    """A linear head on the final hidden state of a sequence's last real token.

    The course GPT has no padding mask, so a pad token would be attended to and would shift
    the positions of left-padded rows. The classifier therefore moves each row's real tokens to
    the front before the (causal) body runs, so pads come only after every real token and no
    real token sees one: left and right padding give the same logits. Reading the hidden state
    *at the last position* of a right-padded batch, a common bug, would read a pad token instead.

    Args:
        body: a :class:`minillm.model.GPT` (its language-model head is not used).
        num_classes: number of labels.
    """

    def __init__(self, body: nn.Module, num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.body = body
        self.head = nn.Linear(body.config.n_embd, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(B, n_embd) final-normed hidden state of each row's last real token."""
        if ids.shape != attention.shape:
            raise ValueError(
                f"ids {tuple(ids.shape)} and attention {tuple(attention.shape)} differ"
            )
        last_token_index(attention)  # validates the mask
        lengths = attention.sum(1)
        # Move each row's real tokens to the front, in order (stable sort: real before pad).
        # Every row is then right-padded from position 0, and under causal attention a real
        # token sees only the real tokens before it at their own positions, as if the row ran
        # alone: one batched pass serves rows of every length, whatever the padding side.
        order = torch.argsort((attention == 0).to(torch.int8), dim=1, stable=True)
        packed = torch.gather(ids, 1, order)[:, : int(lengths.max())]
        self.body._check_ids(packed)
        hidden = self.body._hidden(packed, 0, None)  # (B, longest, n_embd)
        return hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]

    def forward(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) logits."""
        return self.head(self.features(ids, attention))


def encode_examples(chat: ChatFormat, examples: Sequence, pad_id: int, max_len: int | None = None):
    """(ids, targets) for instruction examples (objects with ``prompt`` and ``answer``)."""
    ids, targets, _ = collate([chat.example(e.prompt, e.answer) for e in examples], pad_id, max_len)
    return ids, targets
