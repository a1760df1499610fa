"""The small pieces every fine-tuning objective is made of (lesson 08).

- :func:`response_logprobs`: log p(response | prompt), per response token and summed, for a batch
  of prompt-response pairs of any lengths (the quantity SFT maximises and DPO and GRPO compare);
- :func:`masked_mean` and :func:`masked_normalize`: average or sum a per-token quantity over the
  tokens a mask keeps, the sum divided by a *constant* (so that every sequence's tokens weigh the
  same whatever its length, as Dr. GRPO does) rather than by the number of kept tokens;
- :func:`token_entropy`: the entropy of each position's next-token distribution, computed from the
  logits without forming the probabilities' logarithm of zero;
- :func:`sft_microbatch_step` and :func:`accumulate_sft_gradients`: one SFT micro-batch's backward
  pass with gradient accumulation, normalised by the whole batch's count of target tokens, so the
  accumulated gradient equals the gradient of the whole batch at once (a mean per micro-batch
  would weigh a micro-batch's tokens by its own token count instead).

Each has a brute-force definition in ``tests/unit/test_finetune_helpers.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ResponseLogprobs",
    "response_logprobs",
    "masked_mean",
    "masked_normalize",
    "token_entropy",
    "sft_microbatch_step",
    "accumulate_sft_gradients",
]


@dataclass(frozen=True)
class ResponseLogprobs:
    """Log-probabilities of responses: ``per_token`` (B, R) with 0 past each response's end,
    ``mask`` (B, R) 1 on real response tokens, and ``total`` (B,) their sum per response."""

    per_token: torch.Tensor
    mask: torch.Tensor
    total: torch.Tensor


def _as_lists(rows: Sequence[Sequence[int]], what: str) -> list[list[int]]:
    out = [list(map(int, row)) for row in rows]
    if not out:
        raise ValueError(f"{what} must hold at least one sequence")
    return out


def response_logprobs(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int = 0,
) -> ResponseLogprobs:
    """``log p(response_t | prompt, response_<t)`` for each response token, in one forward pass.

    Each row is ``prompt + response`` right-padded with ``pad_id``; under causal attention a pad
    only ever follows the real tokens, so it changes no score. Gradients flow (call it under
    ``torch.no_grad()`` to score only).

    Args:
        model: a causal LM returning ``(logits, loss)`` like :class:`minillm.model.GPT`.
        prompts, responses: token ids, one list per example (a prompt must not be empty, a
            response must not be empty).

    Raises:
        ValueError: the lists differ in length, a prompt or response is empty, or a row is longer
            than the model's context.
    """
    prompts, responses = _as_lists(prompts, "prompts"), _as_lists(responses, "responses")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if any(not p for p in prompts) or any(not r for r in responses):
        raise ValueError("every prompt and every response needs at least one token")
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    block = getattr(getattr(model, "config", None), "block_size", None)
    if block is not None and max(lengths) > block:
        raise ValueError(f"a prompt + response has {max(lengths)} tokens; the context is {block}")
    device = next(model.parameters()).device
    B, T, R = len(prompts), max(lengths), max(len(r) for r in responses)
    ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)
    index = torch.zeros((B, R), dtype=torch.long, device=device)  # position predicting token t
    targets = torch.full((B, R), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, R), device=device)
    for b, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[b, : len(p) + len(r)] = torch.tensor(p + r)
        index[b, : len(r)] = torch.arange(len(p) - 1, len(p) + len(r) - 1)
        targets[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1.0
    logits, _ = model(ids)
    picked = torch.gather(logits, 1, index[..., None].expand(-1, -1, logits.shape[-1]))
    per_token = torch.gather(F.log_softmax(picked.float(), -1), 2, targets[..., None])[..., 0]
    per_token = per_token * mask
    return ResponseLogprobs(per_token, mask, per_token.sum(-1))


def _check_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ")
    return mask.to(values.dtype)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over all of them, or along ``dim``).

    Raises:
        ValueError: the shapes differ, or the mask keeps nothing (overall, or in one slice along
            ``dim``): a mean of no values is undefined.
    """
    weights = _check_mask(values, mask)
    count = weights.sum() if dim is None else weights.sum(dim)
    if bool((count == 0).any()):
        raise ValueError("the mask keeps no value (in some row): the mean is undefined")
    total = (values * weights).sum() if dim is None else (values * weights).sum(dim)
    return total / count


def masked_normalize(
    values: torch.Tensor, mask: torch.Tensor, constant: float, dim: int | None = None
) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1, divided by ``constant`` (over all, or along ``dim``).

    Raises:
        ValueError: the shapes differ, or ``constant`` is not a positive finite number.
    """
    if not isinstance(constant, (int, float)) or not 0 < float(constant) < float("inf"):
        raise ValueError(f"constant must be a positive finite number, got {constant!r}")
    weighted = values * _check_mask(values, mask)
    return (weighted.sum() if dim is None else weighted.sum(dim)) / constant


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each next-token distribution: ``logits`` (..., V) -> (...).

    ``H = logsumexp(z) - Σ softmax(z) z``, exact and finite even where a probability underflows
    to 0 (where ``-Σ p log p`` would compute 0 * -inf).
    """
    z = logits.float()
    return torch.logsumexp(z, -1) - (F.softmax(z, -1) * z).sum(-1)


def sft_microbatch_step(
    model: nn.Module, ids: torch.Tensor, targets: torch.Tensor, normalize_by: int
) -> torch.Tensor:
    """Backward of one micro-batch's summed target NLL divided by ``normalize_by``; returns it.

    ``targets`` follow :func:`minillm.finetune.sft.collate` (-100: not a target). Pass the whole
    batch's number of targets as ``normalize_by``: the gradients that accumulate in ``.grad``
    over its micro-batches then sum to the gradient of the whole batch's mean loss.

    Raises:
        ValueError: ``normalize_by`` is not a positive int.
    """
    if isinstance(normalize_by, bool) or not isinstance(normalize_by, int) or normalize_by < 1:
        raise ValueError(f"normalize_by must be a positive int, got {normalize_by!r}")
    logits, _ = model(ids)
    keep = targets != -100
    nll = F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
    loss = nll / normalize_by
    loss.backward()
    return loss.detach()


def accumulate_sft_gradients(
    model: nn.Module, ids: torch.Tensor, targets: torch.Tensor, micro_batch_size: int
) -> torch.Tensor:
    """Accumulate the gradient of the batch's mean target NLL in micro-batches; returns the loss.

    Adds to existing ``.grad`` (zero them first, as before any backward pass).

    Raises:
        ValueError: ``micro_batch_size`` is not a positive int, or no target is unmasked.
    """
    if (
        isinstance(micro_batch_size, bool)
        or not isinstance(micro_batch_size, int)
        or micro_batch_size < 1
    ):
        raise ValueError(f"micro_batch_size must be a positive int, got {micro_batch_size!r}")
    count = int((targets != -100).sum())
    if count == 0:
        raise ValueError("every target is masked: nothing to learn from this batch")
    total = torch.zeros(())
    for start in range(0, ids.shape[0], micro_batch_size):
        rows = slice(start, start + micro_batch_size)
        if bool((targets[rows] != -100).any()):
            total = total + sft_microbatch_step(model, ids[rows], targets[rows], count)
    return total
