"""minillm.serve.generation: processors against transformers, the cache, ragged batches, text streams."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.model import GPT, GPTConfig
from minillm.serve import (
    MinP,
    RepetitionPenalty,
    SamplingParams,
    Temperature,
    TextStream,
    TopK,
    TopP,
    apply_processors,
    generate,
    generate_batch,
    make_processors,
)

transformers = pytest.importorskip("transformers")

VARIANTS = [
    ("gpt2-style", {}),
    ("llama-style", {"pos_emb": "rope", "n_kv_head": 2, "norm": "rmsnorm", "mlp": "swiglu"}),
]


def tiny(block_size: int = 32, **overrides) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=67, block_size=block_size, n_layer=2, n_head=4, n_embd=32, **overrides
    )
    return GPT(config).eval()


def fixed_logits() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 50, generator=gen) * 3
    logits[1, :5] = logits[1, 5]  # ties at the top-k boundary
    history = torch.randint(0, 50, (4, 12), generator=gen)
    return history, logits


def assert_same_scores(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), "different tokens were removed"
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], atol=1e-6, rtol=0)


# ---- logits processors -----------------------------------------------------------------------

PAIRS = [
    (Temperature(0.7), lambda: transformers.TemperatureLogitsWarper(0.7)),
    (Temperature(1.6), lambda: transformers.TemperatureLogitsWarper(1.6)),
    (TopK(1), lambda: transformers.TopKLogitsWarper(1)),
    (TopK(7), lambda: transformers.TopKLogitsWarper(7)),
    (TopP(0.5), lambda: transformers.TopPLogitsWarper(0.5)),
    (TopP(0.9), lambda: transformers.TopPLogitsWarper(0.9)),
    (MinP(0.05), lambda: transformers.MinPLogitsWarper(0.05)),
    (MinP(0.3), lambda: transformers.MinPLogitsWarper(0.3)),
    (RepetitionPenalty(1.3), lambda: transformers.RepetitionPenaltyLogitsProcessor(1.3)),
    (RepetitionPenalty(0.8), lambda: transformers.RepetitionPenaltyLogitsProcessor(0.8)),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[repr(p[0]) for p in PAIRS])
def test_each_processor_equals_transformers(ours, theirs):
    history, logits = fixed_logits()
    assert_same_scores(ours(history, logits.clone()), theirs()(history, logits.clone()))


def test_the_chain_follows_hugging_face_order():
    history, logits = fixed_logits()
    settings_ = dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.2)
    ours = apply_processors(make_processors(**settings_), history, logits)
    chain = transformers.LogitsProcessorList(
        [
            transformers.RepetitionPenaltyLogitsProcessor(1.2),
            transformers.TemperatureLogitsWarper(0.8),
            transformers.TopKLogitsWarper(20),
            transformers.TopPLogitsWarper(0.9),
            transformers.MinPLogitsWarper(0.02),
        ]
    )
    assert_same_scores(ours, chain(history, logits.clone()))
    kinds = [type(p).__name__ for p in make_processors(**settings_)]
    assert kinds == ["RepetitionPenalty", "Temperature", "TopK", "TopP", "MinP"]


def test_repetition_penalty_ignores_padding():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = RepetitionPenalty(2.0)(torch.tensor([[-1, 1, -1]]), logits)
    assert out.tolist() == [[2.0, -4.0, 1.0]]


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-0.1),
        dict(temperature=float("nan")),
        dict(top_k=0),
        dict(top_p=1.5),
        dict(min_p=-0.1),
        dict(repetition_penalty=0.0),
    ],
)
def test_bad_settings_name_the_setting(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        make_processors(**bad)
    with pytest.raises(ValueError, match=name):
        SamplingParams(**bad)


# ---- generate: the cache and seeds --------------------------------------------------------


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_cached_and_recomputed_greedy_tokens_are_identical_past_the_context(name, overrides):
    model = tiny(block_size=16, **overrides)
    prompt = torch.randint(0, 67, (2, 5), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, 50, temperature=0)  # the window slides several times
    assert torch.equal(cached, generate(model, prompt, 50, temperature=0, use_cache=False))
    assert torch.equal(cached, model.generate(prompt, 50, temperature=0))


def test_seeded_sampling_repeats_and_seeds_differ():
    model = tiny()
    prompt = torch.tensor([[1, 2, 3]])

    def draw(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, prompt, 20, 1.0, None, gen, top_p=0.95, repetition_penalty=1.1)

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = tiny()
    prompt = torch.tensor([[4, 5]])
    greedy = generate(model, prompt, 12, temperature=0)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, prompt, 12, 1.5, 1, gen), greedy)
    assert torch.equal(generate(model, prompt, 12, 1.5, None, gen, top_p=0.0), greedy)


# ---- ragged batches ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_left_padded_batch_equals_each_row_alone(name, overrides):
    model = tiny(**overrides)
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [4], [9, 9, 9, 9, 2]]
    batch = generate_batch(model, prompts, 12)
    for prompt, row in zip(prompts, batch, strict=True):
        alone = generate(model, torch.tensor([prompt]), 12, temperature=0)[0, len(prompt) :]
        assert row == alone.tolist(), f"prompt {prompt}: batch {row}, alone {alone.tolist()}"


def test_batch_rows_stop_at_eos_independently():
    model = tiny()
    prompts = [[1, 2, 3], [7, 8]]
    full = generate_batch(model, prompts, 10)
    eos = full[0][2]
    stopped = generate_batch(model, prompts, 10, eos_id=eos)
    assert stopped[0] == full[0][: full[0].index(eos) + 1]
    expected_1 = full[1][: full[1].index(eos) + 1] if eos in full[1] else full[1]
    assert stopped[1] == expected_1


def test_generate_batch_rejects_bad_prompts():
    model = tiny()
    with pytest.raises(ValueError, match="empty"):
        generate_batch(model, [[1], []], 3)
    with pytest.raises(ValueError, match="0..66"):
        generate_batch(model, [[1, 67]], 3)
    with pytest.raises(ValueError, match="block_size"):
        generate_batch(model, [[1] * 30], 3)


# ---- text streams -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=30))
def test_text_stream_never_splits_a_character(text):
    data = text.encode("utf-8")
    stream = TextStream(lambda i: bytes([i]))  # one byte per token: the worst case
    pieces = [stream.push(b) for b in data] + [stream.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab\n:", max_size=25), st.sampled_from(["\n\n", "ab:", "b"]))
def test_text_stream_cuts_at_the_first_stop_string(text, stop):
    stream = TextStream(lambda i: bytes([i]), stop=[stop])
    pieces = []
    for byte in text.encode():
        pieces.append(stream.push(byte))
        if stream.stopped:
            break
    pieces.append(stream.finish())
    expected = text.split(stop)[0]
    assert "".join(pieces) == expected
    assert stream.stopped == (stop in text)


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (0.7, 5), (1.3, 1)])
@pytest.mark.parametrize("use_cache", [True, False])
def test_gpt_generate_equals_the_serving_generate(temperature, top_k, use_cache):
    """Lesson 05's sampler (GPT.generate, minillm.model.sampling) and lesson 11's generate agree."""
    from minillm.serve import generate

    torch.manual_seed(0)
    model = tiny(block_size=16).eval()
    prompt = torch.randint(0, model.config.vocab_size, (2, 5))
    ours = model.generate(
        prompt, 30, temperature, top_k, torch.Generator().manual_seed(3), use_cache=use_cache
    )
    served = generate(
        model, prompt, 30, temperature, top_k, torch.Generator().manual_seed(3), use_cache=use_cache
    )
    assert torch.equal(ours, served), (ours, served)
    # and a different seed draws differently when sampling (the check above could not pass by luck)
    if temperature and top_k != 1:
        other = model.generate(prompt, 30, temperature, top_k, torch.Generator().manual_seed(4))
        assert not torch.equal(ours, other)
