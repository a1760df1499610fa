"""minillm.train.baselines: count models against their brute-force definitions, the harness scoring
them, compressor bits per byte, and the report on a prepared data folder."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_corpus import write_pseudo_verse

import minillm.evaluate as M
import minillm.train as B
from minillm import cli
from minillm import evaluate as E
from minillm.tokenizer import BPETokenizer

TINY = [0, 1, 2, 0, 1, 3, 0, 1, 2, 2, 4, 0]  # V = 6: id 5 never occurs


def brute_unigram(tokens: list[int], vocab_size: int, k: float) -> list[float]:
    counts = Counter(tokens)
    return [(counts[b] + k) / (len(tokens) + k * vocab_size) for b in range(vocab_size)]


def brute_bigram(
    tokens: list[int], vocab_size: int, alpha: float, w: float = 0.0, k: float = 1.0
) -> list[list[float]]:
    """p[a][b] by Python loops: (1 - w) (c(a, b) + alpha) / (c(a) + alpha V) + w p_uni(b)."""
    pairs = Counter(zip(tokens[:-1], tokens[1:], strict=True))
    starts = Counter(tokens[:-1])
    uni = brute_unigram(tokens, vocab_size, k)
    table = []
    for a in range(vocab_size):
        row = []
        for b in range(vocab_size):
            if starts[a] + alpha == 0:  # never seen, no smoothing: back off to the unigram
                counted = uni[b]
            else:
                counted = (pairs[(a, b)] + alpha) / (starts[a] + alpha * vocab_size)
            row.append((1 - w) * counted + w * uni[b])
        table.append(row)
    return table


def brute_nll(tokens: list[int], table: list[list[float]]) -> float:
    return -sum(math.log(table[a][b]) for a, b in zip(tokens[:-1], tokens[1:], strict=True))


# ---------------------------------------------------------------------------------------------
# Count models = their definitions
# ---------------------------------------------------------------------------------------------


def test_unigram_equals_its_definition():
    model = B.UnigramModel.fit(TINY, 6, k=0.5)
    expected = brute_unigram(TINY, 6, 0.5)
    np.testing.assert_allclose(model.probs(), expected, rtol=0, atol=1e-15)
    held_out = [1, 5, 0, 3]
    want = -sum(math.log(expected[b]) for b in held_out[1:]) / 3
    assert model.nll(held_out) == pytest.approx(want, abs=1e-12)
    logits, loss = model(torch.tensor([held_out]))
    assert logits.shape == (1, 4, 6) and loss is None
    torch.testing.assert_close(logits[0, 2], torch.tensor(expected).log().float())


@pytest.mark.parametrize(("alpha", "w"), [(0.05, 0.0), (1.0, 0.0), (0.3, 0.25), (0.0, 0.5)])
def test_bigram_equals_its_definition(alpha, w):
    model = B.BigramModel.fit(TINY, 6, alpha=alpha, unigram_weight=w)
    expected = brute_bigram(TINY, 6, alpha, w)
    a, b = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    np.testing.assert_allclose(model.prob(a.ravel(), b.ravel()).reshape(6, 6), expected, atol=1e-15)
    # the dense table the forward pass indexes holds the same numbers (in float32)
    np.testing.assert_allclose(model.log_probs.exp().numpy(), expected, rtol=1e-6)
    held_out = [0, 1, 5, 5, 2, 4, 0]
    assert model.nll(held_out) == pytest.approx(brute_nll(held_out, expected) / 6, abs=1e-12)
    x = torch.tensor([held_out[:-1]])
    logits, loss = model(x, torch.tensor([held_out[1:]]))
    assert logits.shape == (1, 6, 6)
    assert float(loss) == pytest.approx(brute_nll(held_out, expected) / 6, rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 6), min_size=2, max_size=60),
    vocab_extra=st.integers(0, 3),
    alpha=st.floats(0.001, 3.0),
    w=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_every_context_gets_a_distribution_that_sums_to_one(tokens, vocab_extra, alpha, w):
    vocab_size = max(tokens) + 1 + vocab_extra
    model = B.BigramModel.fit(tokens, vocab_size, alpha=alpha, unigram_weight=w)
    table = model.log_probs.double().exp()
    torch.testing.assert_close(table.sum(1), torch.ones(vocab_size, dtype=torch.float64))
    assert (table > 0).all(), "smoothing must leave no pair with probability 0"
    expected = brute_bigram(tokens, vocab_size, alpha, w)
    np.testing.assert_allclose(table.numpy(), expected, rtol=2e-6)
    uni = B.UnigramModel.fit(tokens, vocab_size, k=alpha)
    assert uni.probs().sum() == pytest.approx(1.0, abs=1e-12)


def test_the_bigram_beats_the_unigram_on_text_with_structure():
    rng = np.random.default_rng(0)
    cycle = np.tile(np.arange(8), 500)  # 0 1 2 .. 7 0 1 ..: each id says what comes next
    noisy = np.where(rng.random(cycle.size) < 0.1, rng.integers(0, 8, cycle.size), cycle)
    train, val = noisy[:3000], noisy[3000:]
    unigram, bigram = B.UnigramModel.fit(train, 8), B.BigramModel.fit(train, 8)
    assert unigram.nll(val) == pytest.approx(math.log(8), abs=0.02)  # frequencies are flat
    assert bigram.nll(val) < 0.5 * unigram.nll(val)


def test_bigram_sweep_scores_like_the_fitted_models():
    rng = np.random.default_rng(1)
    train, val = rng.integers(0, 5, 400), rng.integers(0, 5, 100)
    rows = B.bigram_sweep(train, val, 5, alphas=(0.0, 0.1, 1.0), unigram_weights=(0.0, 0.2))
    assert len(rows) == 5  # alpha = 0 without the unigram is skipped
    for row in rows:
        fitted = B.BigramModel.fit(
            train, 5, alpha=row["alpha"], unigram_weight=row["unigram_weight"]
        )
        assert row["nll"] == pytest.approx(fitted.nll(val), abs=1e-12)


def test_count_models_reject_bad_input():
    with pytest.raises(ValueError, match="allowed: 0 .. 5"):
        B.BigramModel.fit([0, 1, 6], 6)
    with pytest.raises(ValueError, match="1-D"):
        B.UnigramModel.fit([[0, 1]], 6)
    with pytest.raises(TypeError, match="integer"):
        B.UnigramModel.fit([0.5, 1.0], 6)
    with pytest.raises(ValueError, match="at least 2"):
        B.BigramModel.fit([3], 6)
    with pytest.raises(ValueError, match="infinite loss"):
        B.BigramModel.fit(TINY, 6, alpha=0.0)
    with pytest.raises(ValueError, match="alpha must be"):
        B.BigramModel.fit(TINY, 6, alpha=-1.0)
    with pytest.raises(ValueError, match=r"unigram_weight must be in \[0, 1\]"):
        B.BigramModel.fit(TINY, 6, unigram_weight=1.5)
    with pytest.raises(ValueError, match="k must be > 0"):
        B.UnigramModel.fit(TINY, 6, k=0)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        B.UnigramModel.fit(TINY, 0)
    with pytest.raises(ValueError, match="smaller vocabulary"):
        B.BigramModel.fit([0, 1, 2], 20_000)
    model = B.BigramModel.fit(TINY, 6)
    with pytest.raises(ValueError, match="outside 0 .. 5"):
        model(torch.tensor([[0, 6]]))
    with pytest.raises(TypeError, match=r"\(batch, time\) integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2 token ids"):
        model.nll([1])


# ---------------------------------------------------------------------------------------------
# The lesson-09 harness scores them unchanged
# ---------------------------------------------------------------------------------------------

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. "
) * 6


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 300, special_tokens=["<|endoftext|>"])


def test_the_harness_scores_a_bigram_like_the_definition(tokenizer):
    ids = tokenizer.encode(TEXT)
    vocab = tokenizer.vocab_size
    model = B.BigramModel.fit(ids, vocab, alpha=0.1, block_size=32)
    table = brute_bigram(ids, vocab, 0.1)
    document = TEXT[:300]
    scored = [tokenizer.special_tokens["<|endoftext|>"], *tokenizer.encode(document)]
    total = brute_nll(scored, table)
    n_bytes = len(document.encode("utf-8"))

    # the harness computes in float32, hence rel=1e-5
    report = E.evaluate(model, tokenizer, [E.PerplexityTask([("hamlet", document)])])
    metrics = report["perplexity"].metrics
    assert metrics["tokens"] == len(scored) - 1
    assert metrics["loss"] == pytest.approx(total / (len(scored) - 1), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(total / math.log(2) / n_bytes, rel=1e-5)
    assert report.meta["parameters"] == vocab * vocab  # one number per pair of ids
    # one token of context is all a bigram uses: window and stride change nothing
    for stride in (1, 7, 32):
        got = M.bits_per_byte(model, tokenizer, document, stride=stride)
        assert got == pytest.approx(total / math.log(2) / n_bytes, rel=1e-5), stride
    score = M.score_text(model, tokenizer, document)
    assert score.nll == pytest.approx(total, rel=1e-5)


def test_multiple_choice_and_generation_run_on_a_bigram(tokenizer):
    model = B.BigramModel.fit(tokenizer.encode(TEXT), tokenizer.vocab_size, block_size=16)
    item = M.MultipleChoiceItem("To be, or not to", (" be", " sea"), 0)
    result = E.evaluate(model, tokenizer, [E.MultipleChoiceTask([item])])
    assert result["multiple_choice"].metrics["accuracy"] == 1.0  # " be" follows " to" here
    ctx, choice = tokenizer.encode(item.context), tokenizer.encode(" be")
    want = sum(
        math.log(model.prob(a, b)[0]) for a, b in zip([ctx[-1], *choice[:-1]], choice, strict=True)
    )
    assert result["multiple_choice"].rows[0]["logprobs"][0] == pytest.approx(want, rel=1e-5)
    out = E.GenerationTask(["To be, or"], [" not to be"], max_new_tokens=4).run(model, tokenizer)
    assert len(out.rows) == 1 and out.rows[0]["output"]


# ---------------------------------------------------------------------------------------------
# Compressors
# ---------------------------------------------------------------------------------------------


def test_conditioning_on_related_text_lowers_compressor_bits():
    rng = np.random.default_rng(0)
    words = ["thou", "art", "my", "lord", "king", "night", "sweet", "love", "death", "speak"]
    lines = [" ".join(rng.choice(words, 7)) + ".\n" for _ in range(600)]
    train, val = "".join(lines[:500]), "".join(lines[500:])
    for method in B.COMPRESSORS:
        alone = B.compressor_bits_per_byte(val, method)
        conditioned = B.compressor_bits_per_byte(val, method, context=train)
        assert 0 < conditioned < alone < 8, (method, conditioned, alone)
    # conditioned on itself, the text costs almost nothing the second time
    assert B.compressor_bits_per_byte(val, "xz", context=val) < 0.2
    rows = B.compressor_table(val, train)
    assert [(r["method"], r["conditioned"]) for r in rows] == [
        (m, c) for m in ("gzip", "bz2", "xz") for c in (False, True)
    ]
    assert rows[0]["bits_per_byte"] == B.compressor_bits_per_byte(val, "gzip")


def test_compressors_reject_bad_input():
    with pytest.raises(ValueError, match="allowed: gzip, bz2, xz"):
        B.compressor_bits_per_byte("some text", "zip")
    with pytest.raises(ValueError, match="empty"):
        B.compressor_bits_per_byte("", "gzip")
    with pytest.raises(TypeError, match="str or bytes"):
        B.compressor_bits_per_byte(123, "gzip")
    with pytest.raises(TypeError, match="context must be a str or bytes"):
        B.compressor_bits_per_byte("text", "gzip", context=[1, 2])
    assert B.compressed_size(b"aaaa" * 100, "bz2") < 400


# ---------------------------------------------------------------------------------------------
# The report on a prepared folder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus")
    write_pseudo_verse(corpus)
    out = tmp_path_factory.mktemp("data")
    args = ["prepare", "--corpus", str(corpus), "--out-dir", str(out), "--vocab-size", "300"]
    assert cli.main([*args, "--fractions", "0.8", "0.1", "0.1"]) == 0
    return out


def test_baseline_report_on_a_prepared_folder(prepared):
    from minillm.data import load_tokens

    meta = json.loads((prepared / "meta.json").read_text())
    report = B.baseline_report(prepared)
    names = [r["name"] for r in report["rows"]]
    assert names[:2] == ["unigram", "bigram"] and len(names) == 8
    assert report["bytes"] == meta["splits"]["val"]["bytes"]
    assert len(B.split_text(prepared, "val")) == report["bytes"]
    train = load_tokens(prepared / "train.bin")
    val = load_tokens(prepared / "val.bin")
    bigram = B.BigramModel.fit(train, meta["vocab_size"])
    row = report["rows"][1]
    assert row["nats_per_token"] == pytest.approx(bigram.nll(val), abs=1e-12)
    bytes_per_token = meta["splits"]["val"]["bytes"] / meta["splits"]["val"]["tokens"]
    assert row["bits_per_byte"] == pytest.approx(
        row["nats_per_token"] / math.log(2) / bytes_per_token
    )
    assert row["bits_per_byte"] < report["rows"][0]["bits_per_byte"]  # the bigram uses context
    assert all(r["bits_per_byte"] > 0 for r in report["rows"])
    # cached: a second call reads baselines.json; other settings compute afresh
    assert (prepared / B.BASELINES_FILE).is_file()
    assert B.baseline_report(prepared) == report
    other = B.baseline_report(prepared, alpha=1.0, compressors=())
    assert len(other["rows"]) == 2 and other["rows"][1]["nats_per_token"] != row["nats_per_token"]
    table = B.format_report(report, [{"name": "gpt", "nats_per_token": 1.0, "bits_per_byte": 0.1}])
    assert table.splitlines()[2].startswith("gpt")  # sorted best first
    with pytest.raises(ValueError, match="val or test"):
        B.baseline_report(prepared, split="train")
    with pytest.raises(ValueError, match="unknown compressor"):
        B.baseline_report(prepared, compressors=("zstd",))


def test_package_exports_the_baselines():
    import minillm

    assert minillm.BigramModel is B.BigramModel and minillm.UnigramModel is B.UnigramModel
    assert minillm.baseline_report is B.baseline_report
