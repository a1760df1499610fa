"""minillm.interpret: attention, head scores, logit lens, attribution, patching and probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minillm import interpret as I
from minillm.model import GPT, GPTConfig


def tiny(preset: str = "course", seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    sizes = dict(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)
    if preset == "llama-small":
        sizes["n_kv_head"] = 2
    model = GPT(GPTConfig.preset(preset, **{**sizes, **overrides})).eval()
    with torch.no_grad():  # larger weights than the init, so attention is far from uniform
        for p in model.parameters():
            p.mul_(4.0)
    return model


def ids(n: int = 12, seed: int = 1, vocab: int = 97) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


# ---- attention -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["course", "llama-small"])
def test_attention_equals_hugging_face_eager_output_attentions(preset):
    model = tiny(preset)
    idx = torch.stack([ids(12, 1), ids(12, 2)])
    attn, logits = I.attention_maps(model, idx)
    hf = model.to_hf(attn_implementation="eager")
    with torch.no_grad():
        out = hf(idx, output_attentions=True)
    theirs = torch.stack(out.attentions)  # (layers, batch, heads, T, T)
    assert attn.shape == theirs.shape == (2, 2, 4, 12, 12)
    assert (attn - theirs).abs().max().item() <= 1e-5
    assert attn.std() > 0.05  # not a uniform map that would match anything
    torch.testing.assert_close(logits, out.logits, atol=1e-4, rtol=1e-4)


def test_attention_is_causal_rows_sum_to_one_and_the_model_is_left_unchanged():
    model = tiny()
    idx = ids()
    attn, logits = I.attention_maps(model, idx)
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    assert torch.all(attn.triu(1) == 0)
    for block in model.transformer.h:
        assert block.attn.use_sdpa and block.attn.probs_hook is None
    torch.testing.assert_close(logits, model(idx[None])[0], atol=1e-5, rtol=1e-5)


def test_head_scores_recognise_constructed_heads():
    T = 6
    idx = torch.tensor([[5, 7, 5, 9, 7, 5]])
    prev = torch.zeros(T, T)
    prev[0, 0] = 1
    prev[torch.arange(1, T), torch.arange(T - 1)] = 1
    first = torch.zeros(T, T)
    first[:, 0] = 1
    same = torch.zeros(T, T)
    same[0, 0] = 1
    for t in range(1, T):  # all weight on the earlier copies of this token, or on itself
        copies = [s for s in range(t) if idx[0, s] == idx[0, t]] or [t]
        same[t, copies] = 1 / len(copies)
    uniform = torch.tril(torch.ones(T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    attn = torch.stack([prev, first, same, uniform])[None, None]  # (1, 1, 4 heads, T, T)
    scores = I.head_scores(attn, idx, window=2)
    assert list(scores) == list(I.HEAD_SCORES)
    assert scores["previous token"][0].tolist() == pytest.approx(
        [1.0, 0.2, 0.0, 0.2 * sum(1 / t for t in range(2, 7))]
    )
    assert scores["first token"][0, 1].item() == pytest.approx(1.0)
    assert scores["duplicate token"][0, 2].item() == pytest.approx(1.0)
    assert scores["local window"][0, 0].item() == pytest.approx(1.0)
    want = np.mean([2 / (t + 1) for t in range(2, T)])
    assert scores["local window"][0, 3].item() == pytest.approx(want)


def test_attention_rollout_rows_sum_to_one_and_pure_residual_is_identity():
    attn, _ = I.attention_maps(tiny(), ids())
    rollout = I.attention_rollout(attn)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(1, 12))
    assert torch.all(rollout.triu(1).abs() < 1e-7)
    torch.testing.assert_close(I.attention_rollout(attn, residual_weight=1.0)[0], torch.eye(12))
    one = I.attention_rollout(attn[:1], residual_weight=0.0)
    torch.testing.assert_close(one, attn[0].mean(1))


def test_ablating_heads_changes_only_what_it_should():
    model = tiny()
    idx = ids()[None]
    base = model(idx)[0]
    with I.ablate_heads(model, []):
        torch.testing.assert_close(model(idx)[0], base, atol=1e-5, rtol=1e-5)
    with I.ablate_heads(model, [(1, 2)]):
        ablated = model(idx)[0]
    assert (ablated - base).abs().max() > 1e-3
    torch.testing.assert_close(model(idx)[0], base)  # the hook is gone afterwards
    with pytest.raises(ValueError, match="no head"), I.ablate_heads(model, [(2, 0)]):
        pass


# ---- logit lens --------------------------------------------------------------------------------


def test_logit_lens_last_layer_equals_the_logits():
    model = tiny()
    idx = torch.stack([ids(10, 3), ids(10, 4)])
    lens, logits = I.logit_lens(model, idx)
    assert lens.shape == (3, 2, 10, 97)
    with torch.no_grad():
        reference = model(idx)[0]
    assert (lens[-1] - reference).abs().max().item() <= 1e-6
    assert (lens[0] - reference).abs().max().item() > 1e-2  # earlier layers read differently


def test_lens_scores_last_layer_matches_the_model_loss():
    model = tiny()
    windows = torch.randint(0, 97, (5, 11), generator=torch.Generator().manual_seed(5))
    scores = I.lens_scores(model, windows, batch_size=2)
    with torch.no_grad():
        _, loss = model(windows[:, :-1], windows[:, 1:])
    assert scores["tokens"] == 50
    assert scores["nll_sum"][-1] / 50 == pytest.approx(loss.item(), rel=1e-5)
    hits = (model(windows[:, :-1])[0].argmax(-1) == windows[:, 1:]).sum().item()
    assert scores["correct"][-1] == hits


# ---- attribution ------------------------------------------------------------------------------


@pytest.mark.parametrize("method, steps", [("gausslegendre", 32), ("riemann_trapezoid", 200)])
def test_integrated_gradients_completeness(method, steps):
    model = tiny()
    idx = ids(10)
    result = I.integrated_gradients(model, idx, target=3, steps=steps, method=method)
    assert result.attributions.shape == (10,)
    delta = result.output - result.baseline_output
    assert abs(delta) > 0.1
    assert result.completeness_gap < 0.01, (result.attributions.sum(), delta)
    assert result.output == pytest.approx(I.target_logprob(model, idx, 3), abs=1e-4)


def test_integrated_gradients_with_too_few_steps_is_visibly_incomplete():
    model = tiny()
    coarse = I.integrated_gradients(model, ids(10), 3, steps=2, method="riemann_left")
    fine = I.integrated_gradients(model, ids(10), 3, steps=32)
    assert coarse.completeness_gap > fine.completeness_gap


def test_integrated_gradients_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = tiny()
    idx = ids(8)
    embeds = model.transformer.wte(idx[None]).detach()

    def forward(e):
        return I.logprob_from_embeddings(model, idx[None], e, 5, 7)

    theirs = captum_attr.IntegratedGradients(forward).attribute(
        embeds, baselines=torch.zeros_like(embeds), n_steps=20, method="gausslegendre"
    )
    ours = I.integrated_gradients(model, idx, 5, steps=20, method="gausslegendre")
    torch.testing.assert_close(ours.attributions, theirs.sum(-1)[0], atol=1e-5, rtol=1e-4)


def test_gradient_x_input_is_the_embedding_gradient_dot_the_embedding():
    model = tiny()
    idx = ids(9, seed=7)
    got = I.gradient_x_input(model, idx, target=11, position=4)
    captured = {}

    def keep(_m, _i, out):
        out.retain_grad()
        captured["e"] = out

    handle = model.transformer.wte.register_forward_hook(keep)
    try:
        logits = model(idx[None])[0]
        torch.log_softmax(logits[0, 4], -1)[11].backward()
    finally:
        handle.remove()
        model.zero_grad()
    e = captured["e"]
    torch.testing.assert_close(got, (e.grad * e).sum(-1)[0].detach())
    assert torch.all(got[5:] == 0)  # later tokens cannot influence position 4


# ---- activation patching ----------------------------------------------------------------------


def test_patching_a_layer_with_its_own_activations_changes_nothing():
    model = tiny()
    idx = ids(10)[None]
    stream, logits = I.residual_stream(model, idx)
    for layer in range(len(stream)):
        for position in (0, 4, 9):  # one row, as in the clean run: equal bit for bit
            patched = I.patch_residual(model, idx, stream, layer, [position])
            torch.testing.assert_close(patched, logits, atol=0, rtol=0)
        batched = I.patch_residual(model, idx.expand(3, -1), stream, layer, [0, 4, 9])
        torch.testing.assert_close(batched, logits.expand(3, -1, -1), atol=1e-5, rtol=1e-5)


def test_patching_sweep_restores_fully_at_the_last_layer_and_last_position():
    model = tiny()
    clean = ids(10)
    corrupt = clean.clone()
    corrupt[2] = (clean[2] + 1) % 97
    result = I.patching_sweep(model, clean, corrupt, answer=4, wrong=6)
    restored = result["restored"]
    assert restored.shape == (3, 10)
    assert restored[-1, -1].item() == pytest.approx(1.0, abs=1e-4)
    assert restored[0, 2].item() == pytest.approx(1.0, abs=1e-4)  # the only changed token
    assert torch.all(restored[0, :2].abs() < 1e-5)  # unchanged tokens: patching does nothing
    with pytest.raises(ValueError, match="same shape"):
        I.patching_sweep(model, clean, clean[:-1], 4, 6)


# ---- probes and input checks ------------------------------------------------------------------


def test_probe_finds_a_linear_feature_and_the_control_does_not():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    noise = rng.standard_normal((400, 8))
    signal = noise.copy()
    signal[:, 0] += 3 * (2 * labels - 1)
    result = I.probe_layers(np.stack([noise, signal]), labels, seed=0)
    assert result.accuracy[1] > 0.95 > result.accuracy[0] + 0.2
    assert result.control[1] < 0.7
    assert 0.4 < result.majority < 0.65
    groups = np.arange(400) // 10
    grouped = I.probe_layers(np.stack([noise, signal]), labels, groups=groups, seed=0)
    assert grouped.accuracy[1] > 0.95


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: I.attention_maps(m, torch.zeros(2, 3, 4, dtype=torch.long)), "shape"),
        (lambda m: I.attention_maps(m, torch.zeros(3)), "integer"),
        (lambda m: I.integrated_gradients(m, ids(5), 3, method="simpson"), "method"),
        (lambda m: I.integrated_gradients(m, ids(5), 3, baseline=torch.zeros(4, 32)), "baseline"),
        (lambda m: I.gradient_x_input(m, ids(5), 500), "target"),
        (lambda m: I.head_scores(torch.zeros(2, 1, 4, 5, 5), ids(6)), "idx"),
        (lambda m: I.attention_rollout(torch.zeros(2, 1, 4, 5, 5), 2.0), "residual_weight"),
        (lambda m: I.probe_layers(np.zeros((2, 5, 3)), [0] * 5), "two classes"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(tiny())
