"""minillm.evaluate.metrics language-model scores: sliding windows, perplexity, bits per byte,
continuation log-likelihoods, multiple choice, bias probes and the bootstrap.

The stand-in model is causal and sees every token of its window (its output at position t is
a function of the running mean of the embeddings up to t), so a wrong window or an off-by-one
in the targets changes the numbers. Every sliding-window result is checked against a
brute-force computation that scores one token per forward pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import minillm.evaluate as M

VOCAB = 257  # 256 bytes + <|endoftext|>


class ToyCausalLM(nn.Module):
    """Logits at position t depend on all tokens from the window start to t (and on t)."""

    def __init__(self, block_size: int = 8, vocab_size: int = VOCAB, tuple_output: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.config = type("Config", (), {"block_size": block_size})()
        self.embed = nn.Embedding(vocab_size, 16)
        self.pos = nn.Embedding(block_size, 16)
        self.head = nn.Linear(16, vocab_size)
        self.tuple_output = tuple_output

    def forward(self, idx: torch.Tensor):
        assert idx.shape[1] <= self.config.block_size, "window longer than the context"
        h = self.embed(idx)
        running_mean = h.cumsum(1) / torch.arange(1, idx.shape[1] + 1).view(1, -1, 1)
        logits = self.head(torch.tanh(running_mean + self.pos(torch.arange(idx.shape[1]))))
        return (logits, None) if self.tuple_output else logits


class ByteTokenizer:
    """UTF-8 bytes as ids, plus <|endoftext|> = 256: one token per byte."""

    special_tokens = {"<|endoftext|>": 256}

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def model() -> ToyCausalLM:
    return ToyCausalLM()


@torch.no_grad()
def nll_of_last(model, context: list[int], target: int) -> float:
    logits = M.model_logits(model, torch.tensor([context]))[0, -1]
    return float(-torch.log_softmax(logits.double(), -1)[target])


def brute_force_nlls(model, ids: list[int], block_size: int, stride: int) -> list[float]:
    """One forward pass per target, with the window start the sliding rule assigns to it."""
    out = []
    for t in range(1, len(ids)):
        start = 0 if t <= block_size else math.ceil((t - block_size) / stride) * stride
        out.append(nll_of_last(model, ids[start:t], ids[t]))
    return out


# ---------------------------------------------------------------------------------------------
# Sliding windows
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 60), block_size=st.integers(1, 12), data=st.data())
def test_sliding_windows_score_each_token_once_with_enough_context(n, block_size, data):
    stride = data.draw(st.integers(1, block_size))
    windows = M.sliding_windows(n, block_size, stride)
    targets = [t for _, first, last in windows for t in range(first, last + 1)]
    assert targets == list(range(1, n))  # each target once, in order
    for k, (start, first, last) in enumerate(windows):
        assert last - start <= block_size  # the window fits the context
        assert start == k * stride
        if k > 0:  # after the first window every target has >= block_size - stride + 1 context
            assert first - start >= block_size - stride + 1


@settings(max_examples=25, deadline=None)
@given(
    ids=st.lists(st.integers(0, VOCAB - 1), min_size=2, max_size=40),
    data=st.data(),
    batch_size=st.integers(1, 4),
)
def test_token_nlls_equal_brute_force_for_every_stride(model, ids, data, batch_size):
    block_size = model.config.block_size
    stride = data.draw(st.integers(1, block_size))
    ours = M.token_nlls(model, ids, stride=stride, batch_size=batch_size)
    expected = torch.tensor(brute_force_nlls(model, ids, block_size, stride), dtype=torch.float64)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_stride_equal_to_block_size_is_non_overlapping_chunks(model):
    ids = torch.randint(0, VOCAB, (50,), generator=torch.Generator().manual_seed(1))
    block = model.config.block_size
    chunks = []
    for start in range(0, len(ids) - 1, block):
        x, y = ids[start : start + block], ids[start + 1 : start + block + 1]
        logits = M.model_logits(model, x[: len(y)].unsqueeze(0))[0]
        chunks.append(torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    expected = torch.cat(chunks).double()
    # float32 batched vs unbatched: equal up to rounding
    torch.testing.assert_close(
        M.token_nlls(model, ids, stride=block), expected, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(M.token_nlls(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_stride_one_gives_every_token_the_longest_context(model):
    ids = torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(2)).tolist()
    block = model.config.block_size
    expected = [nll_of_last(model, ids[max(0, t - block) : t], ids[t]) for t in range(1, len(ids))]
    torch.testing.assert_close(
        M.token_nlls(model, ids, stride=1),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bare_logits_and_tuple_outputs_agree():
    ids = list(range(20))
    torch.testing.assert_close(
        M.token_nlls(ToyCausalLM(tuple_output=False), ids),
        M.token_nlls(ToyCausalLM(tuple_output=True), ids),
    )


def test_training_flag_is_restored(model):
    model.train()
    M.token_nlls(model, [1, 2, 3])
    assert model.training
    model.eval()
    M.token_nlls(model, [1, 2, 3])
    assert not model.training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ids": [1]}, "at least 2 token ids"),
        ({"ids": [1, 2, 3], "stride": 0}, "stride must be between 1 and block_size"),
        ({"ids": [1, 2, 3], "stride": 9}, "stride must be between 1 and block_size"),
        ({"ids": [1, 2, 3], "block_size": 0}, "block_size must be a positive int"),
        ({"ids": [1, 2, 3], "batch_size": 0}, "batch_size"),
    ],
)
def test_token_nlls_bad_input(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        M.token_nlls(model, **kwargs)


def test_a_model_without_config_needs_block_size():
    bare = nn.Sequential(nn.Embedding(VOCAB, VOCAB))  # (B, T) -> (B, T, V), no .config
    with pytest.raises(ValueError, match="pass block_size="):
        M.token_nlls(bare, [1, 2, 3])
    assert M.token_nlls(bare, [1, 2, 3], block_size=4).shape == (2,)


def test_model_that_returns_the_wrong_shape_is_rejected():
    with pytest.raises(TypeError, match=r"\(batch, time, vocab\)"):
        M.model_logits(lambda idx: idx.float(), torch.zeros(1, 3, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# Perplexity and bits per byte
# ---------------------------------------------------------------------------------------------


def test_score_text_counts_every_token_and_byte_after_end_of_text(model):
    tok = ByteTokenizer()
    text = "To be, or not to be — that is the question."  # the dash is 3 UTF-8 bytes
    score = M.score_text(model, tok, text)
    n = len(text.encode("utf-8"))
    assert (score.n_tokens, score.n_bytes) == (n, n)
    nlls = M.token_nlls(model, [256, *tok.encode(text)])
    assert score.nll == pytest.approx(float(nlls.sum()))
    assert score.perplexity == pytest.approx(math.exp(float(nlls.mean())))
    # one token per byte: bits per byte = bits per token = log2(perplexity)
    assert score.bits_per_byte == pytest.approx(math.log2(score.perplexity))
    assert M.perplexity(model, tok, text) == pytest.approx(score.perplexity)
    assert M.bits_per_byte(model, tok, text) == pytest.approx(score.bits_per_byte)


def test_without_end_of_text_the_first_token_and_its_bytes_are_left_out(model):
    tok = ByteTokenizer()
    score = M.score_text(model, tok, "éa", prepend_eot=False)  # bytes: c3 a9 61
    assert (score.n_tokens, score.n_bytes) == (2, 2)


def test_a_uniform_model_costs_log2_vocab_bits_per_token():
    # predicting uniformly over 1024 ids costs log2(1024) = 10 bits per token, and with one
    # token per byte, 10 bits per byte
    class Uniform(nn.Module):
        config = type("C", (), {"block_size": 16})()

        def forward(self, idx):
            return torch.zeros(*idx.shape, 1024)

    text = "abcdefghij" * 3
    per_token = M.score_text(Uniform(), ByteTokenizer(), text)
    assert per_token.bits_per_token == pytest.approx(10.0)
    assert per_token.bits_per_byte == pytest.approx(10.0)


def test_score_documents_and_combine(model):
    tok = ByteTokenizer()
    docs = [("hamlet", "To be or not to be."), ("lear", "Nothing will come of nothing.")]
    scores = M.score_documents(model, tok, docs)
    assert [s.name for s in scores] == ["hamlet", "lear"]
    total = M.LMScore.combine(scores)
    assert total.n_tokens == sum(len(t.encode()) for _, t in docs)
    assert total.nll == pytest.approx(sum(s.nll for s in scores))
    # the corpus perplexity weights documents by their tokens
    weighted = sum(s.mean_nll * s.n_tokens for s in scores) / total.n_tokens
    assert total.perplexity == pytest.approx(math.exp(weighted))
    assert set(total.as_dict()) >= {"perplexity", "bits_per_byte", "tokens", "bytes"}
    with pytest.raises(TypeError, match="document 0"):
        M.score_documents(model, tok, [42])


# ---------------------------------------------------------------------------------------------
# Continuations, multiple choice, bias probes
# ---------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.lists(st.integers(0, 255), min_size=1, max_size=10),
            st.lists(st.integers(0, 255), min_size=1, max_size=5),
        ),
        min_size=1,
        max_size=6,
    ),
    batch_size=st.integers(1, 4),
)
def test_continuation_logprobs_equal_one_token_at_a_time(model, pairs, batch_size):
    contexts, continuations = [p[0] for p in pairs], [p[1] for p in pairs]
    ours = M.continuation_logprobs(model, contexts, continuations, batch_size=batch_size)
    block = model.config.block_size
    for (ctx, cont), got in zip(pairs, ours, strict=True):
        full = ctx + cont
        expected = -sum(
            nll_of_last(model, full[max(0, t - block) : t], full[t])
            for t in range(len(ctx), len(full))
        )
        assert got == pytest.approx(expected, abs=1e-4)


def test_continuation_logprobs_bad_input(model):
    with pytest.raises(ValueError, match="differ in length: 1 and 2"):
        M.continuation_logprobs(model, [[1]], [[2], [3]])
    with pytest.raises(ValueError, match="context 0 is empty"):
        M.continuation_logprobs(model, [[]], [[2]])
    with pytest.raises(ValueError, match="continuation 0 is empty"):
        M.continuation_logprobs(model, [[1]], [[]])


def test_multiple_choice_picks_the_most_likely_choice(model):
    tok = ByteTokenizer()
    items = [
        M.MultipleChoiceItem("To be, or not", (" to be", " a cat", " xyzzy"), 0, id="hamlet"),
        M.MultipleChoiceItem("O Romeo", (" Romeo", "!"), 1),
    ]
    result = M.score_multiple_choice(model, tok, items, batch_size=2)
    for item, logprobs, counts in zip(items, result.logprobs, result.n_tokens, strict=True):
        ctx = tok.encode(item.context)
        for choice, lp, n in zip(item.choices, logprobs, counts, strict=True):
            assert n == len(tok.encode(choice))
            assert lp == pytest.approx(
                M.continuation_logprobs(model, [ctx], [tok.encode(choice)])[0], abs=1e-5
            )
    assert result.predictions == [int(np.argmax(lp)) for lp in result.logprobs]
    norm = [
        int(np.argmax(np.array(lp) / np.array(n)))
        for lp, n in zip(result.logprobs, result.n_tokens, strict=True)
    ]
    assert result.predictions_norm == norm
    assert result.accuracy == np.mean(
        [p == it.answer for p, it in zip(result.predictions, items, strict=True)]
    )


def test_multiple_choice_item_validation():
    with pytest.raises(ValueError, match="at least 2 choices"):
        M.MultipleChoiceItem("x", ("a",), 0)
    with pytest.raises(ValueError, match="answer 2 is not an index"):
        M.MultipleChoiceItem("x", ("a", "b"), 2)


def test_bias_probe_gaps_are_sentence_logprob_differences(model):
    tok = ByteTokenizer()
    probes = [
        M.BiasProbe("gender", "{} was brave.", "He", "She", favours="a"),
        M.BiasProbe("gender", "{} is here.", "He", "She"),
        M.BiasProbe("gender", "{} wept.", "The king", "The queen", favours="b"),
    ]
    result = M.bias_probe_gaps(model, tok, probes, n_resamples=200)
    for probe, gap in zip(probes, result.gaps, strict=True):
        a, b = M.sentence_logprob(model, tok, list(probe.sentences))
        assert gap == pytest.approx(a - b, abs=1e-6)
    stereo = result.groups[("gender", "stereotype")]
    # the probe favouring b counts with its sign flipped: positive = prefers the stereotype
    assert stereo.n == 2 and stereo.mean == pytest.approx((result.gaps[0] - result.gaps[2]) / 2)
    assert stereo.low <= stereo.mean <= stereo.high
    assert result.groups[("gender", "neutral")].mean == pytest.approx(result.gaps[1])
    rows = result.table()
    assert [(r["kind"], r["n"]) for r in rows] == [("neutral", 1), ("stereotype", 2)]
    with pytest.raises(ValueError, match="exactly one"):
        M.BiasProbe("x", "no slot", "a", "b")
    with pytest.raises(ValueError, match="favours must be"):
        M.BiasProbe("x", "{} slot", "a", "b", favours="c")
    with pytest.raises(ValueError, match="no bias probes"):
        M.bias_probe_gaps(model, tok, [])


def test_bootstrap_interval_properties():
    values = np.random.default_rng(0).normal(1.0, 2.0, size=400)
    est = M.bootstrap_ci(values, n_resamples=2000, seed=3)
    assert est.low < est.mean < est.high
    # for a mean, the bootstrap interval is close to the normal one: mean ± 1.96 s/√n
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert (est.high - est.low) / 2 == pytest.approx(half_width, rel=0.15)
    assert M.bootstrap_ci(values, seed=3) == M.bootstrap_ci(values, seed=3)  # seeded
    constant = M.bootstrap_ci([2.0] * 5)
    assert (constant.low, constant.mean, constant.high) == (2.0, 2.0, 2.0)
    for bad in ([], [[1.0]]):
        with pytest.raises(ValueError, match="non-empty 1-D"):
            M.bootstrap_ci(bad)
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap_ci([1.0], confidence=1.5)
