"""The fine-tuning helpers against brute-force definitions written as plain loops."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.finetune import (
    accumulate_sft_gradients,
    collate,
    masked_mean,
    masked_normalize,
    response_logprobs,
    sft_loss,
    sft_microbatch_step,
    token_entropy,
)
from minillm.finetune.sft import Encoded
from minillm.model import GPT, GPTConfig


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig.preset(
        "course", n_layer=2, n_embd=32, n_head=2, vocab_size=50, block_size=32
    )
    model = GPT(config).eval()
    with torch.no_grad():  # larger weights: distributions far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
RESPONSES = [[10, 11], [12, 13, 14, 15], [16]]


def test_response_logprobs_equal_one_forward_pass_per_token():
    model = tiny_gpt()
    got = response_logprobs(model, PROMPTS, RESPONSES, pad_id=49)
    for b, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        total = 0.0
        for t, token in enumerate(response):
            context = torch.tensor([prompt + response[:t]])  # the row alone, no padding at all
            with torch.no_grad():
                logits = model(context)[0][0, -1]
            p = math.exp(logits[token].item()) / sum(math.exp(v) for v in logits.tolist())
            assert got.per_token[b, t].item() == pytest.approx(math.log(p), abs=1e-5)
            total += math.log(p)
        assert got.total[b].item() == pytest.approx(total, abs=1e-4)
        assert got.mask[b].tolist() == [1.0] * len(response) + [0.0] * (4 - len(response))
        assert got.per_token[b, len(response) :].abs().sum().item() == 0.0


def test_response_logprobs_refuse_bad_input():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="prompts but"):
        response_logprobs(model, PROMPTS, RESPONSES[:2])
    with pytest.raises(ValueError, match="at least one token"):
        response_logprobs(model, [[]], [[1]])
    with pytest.raises(ValueError, match="context"):
        response_logprobs(model, [[1] * 30], [[2] * 5])


def test_masked_mean_and_normalize_equal_loops():
    torch.manual_seed(1)
    values = torch.randn(3, 5)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 0], [1, 1, 1, 1, 1]])
    kept = [
        (v, m)
        for row_v, row_m in zip(values.tolist(), mask.tolist(), strict=True)
        for v, m in zip(row_v, row_m, strict=True)
    ]
    assert masked_mean(values, mask).item() == pytest.approx(
        sum(v for v, m in kept if m) / sum(m for _, m in kept), abs=1e-6
    )
    assert masked_normalize(values, mask, 7.0).item() == pytest.approx(
        sum(v for v, m in kept if m) / 7.0, abs=1e-6
    )
    for dim in (0, 1):
        rows = values.unbind(1 - dim)  # reducing along dim leaves one value per slice of the other
        masks = mask.unbind(1 - dim)
        for i, (row, m) in enumerate(zip(rows, masks, strict=True)):
            picked = [v for v, k in zip(row.tolist(), m.tolist(), strict=True) if k]
            if picked:
                assert masked_mean(values, mask, dim=dim)[i].item() == pytest.approx(
                    sum(picked) / len(picked), abs=1e-6
                )
            assert masked_normalize(values, mask, 4, dim=dim)[i].item() == pytest.approx(
                sum(picked) / 4, abs=1e-6
            )


def test_masked_helpers_refuse_what_is_undefined():
    values = torch.ones(2, 3)
    with pytest.raises(ValueError, match="keeps no value"):
        masked_mean(values, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="keeps no value"):
        masked_mean(values, torch.tensor([[1, 0, 0], [0, 0, 0]]), dim=1)
    with pytest.raises(ValueError, match="differ"):
        masked_mean(values, torch.ones(3, 2))
    with pytest.raises(ValueError, match="positive finite"):
        masked_normalize(values, torch.ones(2, 3), 0)


def test_token_entropy_equals_the_definition_and_stays_finite():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 11) * 3
    got = token_entropy(logits)
    for i in range(2):
        for j in range(3):
            z = logits[i, j].tolist()
            norm = sum(math.exp(v) for v in z)
            expected = -sum((math.exp(v) / norm) * math.log(math.exp(v) / norm) for v in z)
            assert got[i, j].item() == pytest.approx(expected, abs=1e-5)
    peaked = torch.tensor([[0.0, -1e4, -1e4]])  # probabilities that underflow to exactly 0
    assert torch.isfinite(token_entropy(peaked)).all()
    assert token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)
    assert token_entropy(torch.zeros(1, 8)).item() == pytest.approx(math.log(8), abs=1e-6)


def batch():
    examples = [
        Encoded([1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1]),
        Encoded([7, 8, 9], [0, 1, 1]),
        Encoded([10, 11, 12, 13, 14, 15, 16, 17], [0, 0, 0, 0, 0, 0, 1, 1]),
        Encoded([18, 19, 20, 21], [0, 1, 1, 1]),
        Encoded([22, 23, 24, 25, 26], [0, 0, 1, 1, 1]),
    ]
    ids, targets, _ = collate(examples, pad_id=0)
    return ids, targets


@pytest.mark.parametrize("micro", [1, 2, 3, 5])
def test_accumulated_micro_batches_give_the_whole_batch_gradient(micro):
    ids, targets = batch()
    whole, parts = tiny_gpt(), tiny_gpt()
    whole.train(), parts.train()
    loss = sft_loss(whole, ids, targets)
    loss.backward()
    accumulated = accumulate_sft_gradients(parts, ids, targets, micro)
    assert accumulated.item() == pytest.approx(loss.item(), abs=1e-5)
    for (name, a), b in zip(whole.named_parameters(), parts.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_a_mean_per_micro_batch_would_not_be_the_same():
    """Why normalize_by exists: micro-batches with unequal target counts weigh tokens unequally."""
    ids, targets = batch()
    whole, naive = tiny_gpt(), tiny_gpt()
    sft_loss(whole, ids, targets).backward()
    for start in range(0, 5, 2):
        (sft_loss(naive, ids[start : start + 2], targets[start : start + 2]) / 3).backward()
    gap = max(
        (a.grad - b.grad).abs().max().item()
        for a, b in zip(whole.parameters(), naive.parameters(), strict=True)
    )
    assert gap > 1e-4


def test_microbatch_step_refuses_a_bad_normaliser():
    ids, targets = batch()
    with pytest.raises(ValueError, match="normalize_by"):
        sft_microbatch_step(tiny_gpt(), ids, targets, 0)
    with pytest.raises(ValueError, match="micro_batch_size"):
        accumulate_sft_gradients(tiny_gpt(), ids, targets, 0)
