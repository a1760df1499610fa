"""GRPO (lesson 14): advantages, the clipped loss, the sampler and the update, against brute-force
loops and against ``trl``'s own ``GRPOTrainer._compute_loss`` on the same tensors."""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from minillm.finetune import grpo_rollout as grpo
from minillm.finetune.grpo import GRPOConfig, group_advantages, grpo_loss, kl_k3
from minillm.finetune.grpo_rollout import per_token_logps
from minillm.model import GPT, GPTConfig

END = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=48, block_size=32, n_layer=1, n_head=2, n_embd=16
    )
    return GPT(config).eval()


def _batch(n=6, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(n, length, generator=g) * 3
    old = logps + 0.3 * torch.randn(n, length, generator=g)  # ratios well outside 1 +- 0.2
    ref = logps + 0.5 * torch.randn(n, length, generator=g)
    adv = torch.randn(n, generator=g)
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    mask = (torch.arange(length) < lengths.unsqueeze(1)).float()
    return logps, old, ref, adv, mask


def brute_force_loss(logps, old, ref, adv, mask, beta, eps, loss_type, max_len):
    n, length = logps.shape
    logps, old, ref, adv, mask = (x.tolist() for x in (logps, old, ref, adv, mask))
    per_seq, total, tokens = [], 0.0, 0.0
    for i in range(n):
        seq_sum, seq_tokens = 0.0, 0.0
        for t in range(length):
            if not mask[i][t]:
                continue
            ratio = math.exp(logps[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - eps), 1 + eps)
            term = -min(ratio * adv[i], clipped * adv[i])
            d = ref[i][t] - logps[i][t]
            term += beta * (math.exp(d) - d - 1)
            seq_sum += term
            seq_tokens += 1
        per_seq.append(seq_sum / max(seq_tokens, 1))
        total += seq_sum
        tokens += seq_tokens
    if loss_type == "grpo":
        return sum(per_seq) / n
    if loss_type == "bnpo":
        return total / tokens
    return total / (n * max_len)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_the_loss_equals_a_loop_over_tokens(loss_type, beta):
    logps, old, ref, adv, mask = _batch()
    got = grpo_loss(
        logps, old, adv, mask, ref, beta=beta, epsilon=0.2, loss_type=loss_type,
        max_completion_length=7,
    )  # fmt: skip
    want = brute_force_loss(logps.double(), old.double(), ref.double(), adv.double(), mask,
                            beta, 0.2, loss_type, 7)  # fmt: skip
    assert float(got.loss) == pytest.approx(want, abs=1e-6)


def test_the_loss_ignores_tokens_after_the_end():
    logps, old, ref, adv, mask = _batch()
    changed = logps.clone()
    changed[mask == 0] = -50.0  # garbage where the mask is 0
    for loss_type in ("grpo", "bnpo", "dr_grpo"):
        a = grpo_loss(logps, old, adv, mask, ref, loss_type=loss_type).loss
        b = grpo_loss(changed, old, adv, mask, ref, loss_type=loss_type).loss
        assert torch.equal(a, b)


def test_the_clip_stops_the_gradient_only_where_it_binds():
    # A > 0 and ratio above 1 + eps: clipped, no gradient; A < 0 and ratio above: not clipped.
    old = torch.zeros(2, 1)
    logps = torch.full((2, 1), math.log(1.5), requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(logps, old, adv, torch.ones(2, 1), beta=0.0, loss_type="bnpo")
    out.loss.backward()
    assert logps.grad[0, 0] == 0 and logps.grad[1, 0] != 0
    assert out.clip_fraction == pytest.approx(0.5)


def test_k3_is_zero_on_equal_models_and_positive_otherwise():
    a = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(kl_k3(a, a), torch.zeros(3))
    assert (kl_k3(a, a + torch.tensor([0.3, -0.7, 1.0])) > 0).all()


def test_group_advantages_are_the_sample_std_normalised_rewards():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])  # second group all equal
    got = group_advantages(rewards, 4)
    want = []
    for g in range(2):
        group = rewards[4 * g : 4 * g + 4].tolist()
        mean, std = statistics.fmean(group), statistics.stdev(group)  # n - 1
        want += [(r - mean) / (std + 1e-4) for r in group]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    assert torch.equal(got[4:], torch.zeros(4))
    # the population std (n) would give other numbers: the check can fail
    assert not torch.allclose(
        got[:4], (rewards[:4] - 0.5) / (rewards[:4].std(unbiased=False) + 1e-4)
    )
    centred = rewards - rewards.view(2, 4).mean(1).repeat_interleave(4)
    assert torch.allclose(group_advantages(rewards, 4, "none"), centred)
    batch = group_advantages(rewards, 4, "batch")
    assert torch.allclose(batch * (rewards.std() + 1e-4), centred, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"group_size": 1}, "group_size"), ({"loss_type": "dapo"}, "loss_type"),
     ({"beta": -1}, "beta"), ({"scale": "std"}, "scale"), ({"temperature": 0}, "temperature")],
)  # fmt: skip
def test_bad_settings_are_one_clear_error(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GRPOConfig(**kwargs)


def test_sampled_groups_stop_at_the_end_token_and_record_the_forward_logps(model):
    gen = torch.Generator().manual_seed(1)
    prompt = [5, 6, 7, 8]
    ids, mask, logps = grpo.sample_group(model, prompt, 16, 10, 1.3, (END,), gen)
    assert ids.shape == mask.shape == logps.shape == (16, 10)
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        n = int(sum(m))
        assert m == [1.0] * n + [0.0] * (10 - n)
        assert END not in row[: n - 1]  # nothing ends before the mask does
        if n < 10:
            assert row[n - 1] == END and row[n:] == [END] * (10 - n)
    assert (mask.sum(1) < 10).any(), "pick a seed where some completion ends early"
    full = per_token_logps(model, torch.tensor([prompt]), ids, 1.3)
    assert torch.allclose(full * mask, logps, atol=1e-5)  # the cached decode = one forward pass


def test_sampling_is_repeatable_with_a_seeded_generator(model):
    a = grpo.sample_group(model, [1, 2, 3], 4, 6, 1.0, (END,), torch.Generator().manual_seed(3))
    b = grpo.sample_group(model, [1, 2, 3], 4, 6, 1.0, (END,), torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_grpo_step_raises_the_reward_of_a_token_the_reward_likes(model):
    torch.manual_seed(0)
    policy, reference = copy.deepcopy(model), copy.deepcopy(model)
    config = GRPOConfig(group_size=8, max_new_tokens=3, beta=0.01, end_ids=(END,))

    def reward(prompt, completion):
        return float(sum(t == 9 for t in completion))

    def mean_reward(m):
        b = grpo.rollout(m, [[1, 2]] * 4, reward, config, torch.Generator().manual_seed(99))
        return float(b.rewards.mean())

    before = mean_reward(policy)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        stats = grpo.grpo_step(policy, reference, optimizer, [[1, 2]] * 2, reward, config, gen)
    assert mean_reward(policy) > before + 0.5
    assert stats.kl > 0


# ---- parity with trl -------------------------------------------------------------------------


def _trl_loss(logps, old, ref, adv, mask, *, beta, eps, loss_type, max_len, bias_corrected_kl):
    """trl's GRPOTrainer._compute_loss run on these tensors (a stand-in ``self`` holds the
    settings; the model's per-token log-probabilities are ``logps``)."""
    trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    n, length = logps.shape
    accelerator = SimpleNamespace(
        reduce=lambda x, reduction="sum": x, gather=lambda x: x, num_processes=1,
        gather_for_metrics=lambda x: x,
    )  # fmt: skip
    this = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=loss_type,
        epsilon_low=eps, epsilon_high=eps, use_vllm=False,
        args=SimpleNamespace(use_bias_correction_kl=bias_corrected_kl, delta=None,
                             steps_per_generation=1),
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=max_len, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        accelerator=accelerator,
    )  # fmt: skip
    inputs = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, length, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),  # dapo's normaliser: the tokens of the whole batch
    }
    return trainer.GRPOTrainer._compute_loss(this, None, inputs)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("kl_times_ratio", [False, True])
def test_the_loss_and_its_gradient_equal_trl(loss_type, beta, kl_times_ratio):
    logps, old, ref, adv, mask = _batch(n=8, length=6, seed=4)
    mine_in = logps.clone().requires_grad_(True)
    theirs_in = logps.clone().requires_grad_(True)
    mine = grpo_loss(
        mine_in, old, adv, mask, ref, beta=beta, epsilon=0.2, loss_type=loss_type,
        max_completion_length=9, kl_times_ratio=kl_times_ratio,
    ).loss  # fmt: skip
    theirs = _trl_loss(
        theirs_in, old, ref, adv, mask, beta=beta, eps=0.2, loss_type=loss_type, max_len=9,
        bias_corrected_kl=kl_times_ratio,
    )  # fmt: skip
    assert abs(float(mine) - float(theirs)) <= 1e-6
    mine.backward()
    theirs.backward()
    assert torch.allclose(mine_in.grad, theirs_in.grad, atol=1e-7)


def test_trls_default_dapo_is_our_bnpo_on_one_process():
    logps, old, ref, adv, mask = _batch(n=8, length=6, seed=5)
    mine = grpo_loss(logps, old, adv, mask, ref, beta=0.04, loss_type="bnpo").loss
    theirs = _trl_loss(logps, old, ref, adv, mask, beta=0.04, eps=0.2, loss_type="dapo",
                       max_len=6, bias_corrected_kl=False)  # fmt: skip
    assert abs(float(mine) - float(theirs)) <= 1e-6


def test_the_trl_defaults_that_differ_from_ours_are_the_documented_ones():
    trl = pytest.importorskip("trl")
    theirs = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    ours = GRPOConfig()
    # the same
    assert theirs["epsilon"] == ours.epsilon == 0.2 and theirs["epsilon_high"] is None
    assert theirs["num_iterations"] == ours.num_iterations == 1
    assert theirs["scale_rewards"] == ours.scale == "group"
    assert theirs["num_generations"] == ours.group_size == 8
    assert theirs["importance_sampling_level"] == "token"  # ours is always per token
    # different (the parity tests set trl to ours)
    assert (theirs["beta"], ours.beta) == (0.0, 0.04)
    assert (theirs["loss_type"], ours.loss_type) == ("dapo", "grpo")
    assert (theirs["use_bias_correction_kl"], ours.kl_times_ratio) == (True, False)


def test_trl_default_kl_weighting_differs_from_ours():
    """trl multiplies the KL term by the ratio by default (use_bias_correction_kl=True): off
    policy the two losses differ, which is why the parity test names the setting."""
    logps, old, ref, adv, mask = _batch(n=8, length=6, seed=4)
    mine = grpo_loss(logps, old, adv, mask, ref, beta=0.04, loss_type="bnpo").loss
    theirs = _trl_loss(logps, old, ref, adv, mask, beta=0.04, eps=0.2, loss_type="bnpo",
                       max_len=6, bias_corrected_kl=True)  # fmt: skip
    assert abs(float(mine) - float(theirs)) > 1e-4


def test_advantages_and_logps_equal_trls_helpers(model):
    utils = pytest.importorskip("trl.trainer.utils")
    rewards = torch.tensor([0.2, 0.9, 0.9, 0.1, 0.0, 1.0, 0.5, 0.5, 0.3])
    grouped = rewards.view(-1, 3)
    want = (rewards - grouped.mean(1).repeat_interleave(3)) / (
        utils.nanstd(grouped, dim=1).repeat_interleave(3) + 1e-4
    )
    assert torch.allclose(group_advantages(rewards, 3), want, atol=1e-7)
    prompt = torch.tensor([[4, 5, 6]])
    completion = torch.tensor([[7, 8, 9, END], [10, 11, END, END]])
    logits = model(torch.cat([prompt.expand(2, -1), completion], 1))[0][:, 2:-1] / 0.7
    trl_logps = utils.selective_log_softmax(logits, completion)
    assert torch.allclose(per_token_logps(model, prompt, completion, 0.7), trl_logps, atol=1e-6)


def test_a_long_prompt_keeps_its_last_tokens_and_a_full_context_is_refused(model):
    prompt = [5 + i % 20 for i in range(40)]  # longer than the 32-token context
    ids, mask, logps = grpo.sample_group(model, prompt, 2, 6, 1.0, (), torch.Generator())
    assert mask.sum() == 12  # no end tokens: every token is a response token
    kept = torch.tensor([prompt[-(32 - 6) :]])
    assert torch.allclose(per_token_logps(model, kept, ids), logps, atol=1e-5)
    with pytest.raises(ValueError, match="no room"):
        grpo.sample_group(model, prompt, 2, 32)
