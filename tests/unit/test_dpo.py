"""The DPO loss (minillm.finetune.dpo) against trl's DPOTrainer loss code and the paper's formula."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from minillm.finetune import dpo_loss, sequence_logprobs


def paper_formula(pc, pr, rc, rr, beta):
    """Eq. 7 of Rafailov et al. (2023), written out element by element."""
    losses = []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True):
        z = beta * ((a - c) - (b - d))
        losses.append(-math.log(1 / (1 + math.exp(-z))))
    return sum(losses) / len(losses)


def random_logps(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [-(torch.rand(n, generator=gen, dtype=torch.float64) * 20) for _ in range(4)]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_equals_the_written_out_formula(beta):
    pc, pr, rc, rr = random_logps()
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert math.isclose(float(out.loss), paper_formula(pc, pr, rc, rr, beta), rel_tol=1e-12)
    torch.testing.assert_close(out.margins, beta * ((pc - rc) - (pr - rr)))


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics


def trl_loss(per_token_chosen, per_token_rejected, ref_chosen, ref_rejected, beta):
    """Run trl's own DPOTrainer._compute_loss on given per-token log-probabilities.

    The trainer object is replaced by the attributes the method reads, and the model by a stub
    whose output carries the per-token log-probabilities: the loss arithmetic is trl's code.
    """
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    B, T = per_token_chosen.shape
    log_probs = torch.cat([per_token_chosen, per_token_rejected])
    outputs = SimpleNamespace(
        log_probs=log_probs,
        entropy=torch.zeros_like(log_probs),
        mean_logits=torch.zeros_like(log_probs),
        is_top1=torch.zeros_like(log_probs, dtype=torch.bool),
    )
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * B, T + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, T + 1, dtype=torch.long),
        "completion_mask": torch.ones(2 * B, T + 1, dtype=torch.long),
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return trl_dpo.DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, False)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_equals_trl_dpo_trainer_loss_on_the_same_log_probabilities(beta):
    gen = torch.Generator().manual_seed(1)
    chosen_tokens = -torch.rand(4, 5, generator=gen)
    rejected_tokens = -torch.rand(4, 5, generator=gen)
    ref_chosen = -torch.rand(4, generator=gen) * 5
    ref_rejected = -torch.rand(4, generator=gen) * 5
    theirs = trl_loss(chosen_tokens, rejected_tokens, ref_chosen, ref_rejected, beta)
    ours = dpo_loss(chosen_tokens.sum(1), rejected_tokens.sum(1), ref_chosen, ref_rejected, beta)
    torch.testing.assert_close(ours.loss, theirs, atol=1e-6, rtol=0)


def test_loss_is_log2_when_policy_equals_reference_and_falls_with_the_margin():
    pc, pr, _, _ = random_logps()
    assert math.isclose(float(dpo_loss(pc, pr, pc, pr).loss), math.log(2), rel_tol=1e-12)
    better = dpo_loss(pc + 1, pr - 1, pc, pr)
    assert float(better.loss) < math.log(2) and bool((better.margins > 0).all())


def test_sequence_logprobs_sums_only_unmasked_targets():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=gen)
    targets = torch.tensor([[1, -100, 3, -100], [-100, -100, -100, 6]])
    logp = torch.log_softmax(logits, -1)
    expected = torch.stack([logp[0, 0, 1] + logp[0, 2, 3], logp[1, 3, 6]])
    torch.testing.assert_close(sequence_logprobs(logits, targets), expected)


def test_bad_input():
    pc, pr, rc, rr = random_logps()
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(pc, pr[:2], rc, rr)
    with pytest.raises(ValueError, match="share"):
        sequence_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
