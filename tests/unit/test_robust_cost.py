"""Issue 17, class 5: costs stay linear on adversarial input, and prepare publishes atomically.

Work is measured by counting (vocabulary look-ups, signatures, compared pairs), never by the
clock: doubling the input may at most about double the work.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tiny_corpus import write_pseudo_verse

from minillm import data
from minillm.data import Document, dedup, pack_tokens
from minillm.data import deduplication as dedup_module
from minillm.tokenizer import MAX_WHITESPACE_RUN, WHITESPACE, BPETokenizer, split_long_whitespace
from minillm.train import shards as P


class CountingRanks(dict):
    """A ranks dict that counts the look-ups the merge loop makes."""

    calls = 0

    def get(self, key, default=None):
        CountingRanks.calls += 1
        return super().get(key, default)


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.gpt2()


def lookups(tokenizer: BPETokenizer, text: str) -> int:
    """Rank look-ups the pure-Python encoder makes for ``text`` (a cold cache)."""
    fresh = BPETokenizer(dict(tokenizer._ranks), tokenizer.pattern, tokenizer.special_tokens)
    fresh._ranks = CountingRanks(fresh._ranks)
    CountingRanks.calls = 0
    fresh.encode_ordinary(text)
    return CountingRanks.calls


@pytest.mark.parametrize(
    ("make", "sizes"),
    [
        (lambda n: "x" + " " * n + "y", (4_000, 8_000, 16_000)),
        (lambda n: "a" * n, (1_000, 2_000, 4_000)),
        (lambda n: "!" * n, (1_000, 2_000, 4_000)),
        (lambda n: "\n " * (n // 2) + "z", (4_000, 8_000, 16_000)),
    ],
    ids=["spaces", "letters", "punctuation", "newline-space"],
)
def test_pure_python_encoding_work_grows_linearly(gpt2, make, sizes):
    work = [lookups(gpt2, make(n)) for n in sizes]
    ratios = [b / a for a, b in zip(work, work[1:], strict=False)]
    assert all(r < 2.6 for r in ratios), f"look-ups {work} for sizes {sizes}: ratios {ratios}"


def test_a_million_spaces_reach_no_encoder_whole(gpt2):
    text = "word" + " " * 1_000_000 + "end\n"
    pieces = split_long_whitespace(text)
    longest = max(len(p) - len(p.lstrip(WHITESPACE)) for p in pieces)
    assert longest <= MAX_WHITESPACE_RUN
    ids = gpt2.encode_ordinary_batch([text])[0]  # tiktoken alone overflows its stack here
    assert ids == gpt2.encode_ordinary(text)
    assert gpt2.decode(ids) == text
    streamed = list(gpt2.encode_iterable(text[i : i + 4096] for i in range(0, len(text), 4096)))
    assert streamed == ids


def test_ordinary_text_is_not_cut(gpt2):
    text = "Hello,   world!\n\n    indented code\t\ttabs" + " " * MAX_WHITESPACE_RUN + "x"
    assert split_long_whitespace(text) == [text]
    assert gpt2.encode(text) == gpt2.to_tiktoken().encode_ordinary(text)


def test_whitespace_characters_are_exactly_those_python_calls_space():
    import sys

    expected = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(WHITESPACE) == expected


# --- dedup ----------------------------------------------------------------------------------------


def test_dedup_of_identical_documents_does_constant_minhash_work(monkeypatch):
    counted = {"signatures": 0, "pairs": 0}
    signature, estimate = data.MinHasher.signature, data.estimate_jaccard

    def count_signature(self, *args, **kwargs):
        counted["signatures"] += 1
        return signature(self, *args, **kwargs)

    def count_estimate(*args):
        counted["pairs"] += 1
        return estimate(*args)

    monkeypatch.setattr(data.MinHasher, "signature", count_signature)
    monkeypatch.setattr(dedup_module, "estimate_jaccard", count_estimate)
    text = "to be or not to be that is the question " * 30
    work = []
    for n in (100, 200, 400):
        counted.update(signatures=0, pairs=0)
        docs = [Document(f"d{i}", text) for i in range(n)] + [Document("other", "a b c d e f")]
        kept = dedup(docs)
        assert [d.name for d in kept] == ["d0", "other"]
        work.append(dict(counted))
    assert work == [{"signatures": 2, "pairs": 0}] * 3, work


def test_dedup_groups_documents_with_identical_signatures(monkeypatch):
    # different texts (punctuation) but the same words: one MinHash signature, so one LSH row
    pairs = []
    lsh = data.lsh_candidate_pairs
    monkeypatch.setattr(
        dedup_module,
        "lsh_candidate_pairs",
        lambda sig, bands: pairs.append(len(sig)) or lsh(sig, bands),
    )
    words = "now is the winter of our discontent made glorious summer " * 10
    docs = [Document(f"d{i}", words + "!" * i) for i in range(300)]
    assert [d.name for d in dedup(docs)] == ["d0"]
    assert pairs == [1]


# --- prepare: atomic publication ------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_pseudo_verse(tmp_path_factory.mktemp("corpus"))


def small_prepare(corpus: Path, out: Path, **kwargs):
    return P.prepare(
        out, corpus=str(corpus), vocab_size=300, fractions=(0.8, 0.1, 0.1), verbose=False, **kwargs
    )


def test_a_crash_during_prepare_leaves_no_folder(corpus, tmp_path, monkeypatch):
    calls = []

    def crash(tokenizer, texts):
        calls.append(1)
        if len(calls) == 2:
            raise RecursionError("simulated crash while encoding the val split")
        return real(tokenizer, texts)

    real = P.encode_documents
    monkeypatch.setattr(P, "encode_documents", crash)
    out = tmp_path / "data"
    with pytest.raises(RecursionError):
        small_prepare(corpus, out)
    assert not out.exists(), "a failed prepare must publish nothing"
    assert os.listdir(tmp_path) == [], "no temporary folder may be left behind"


def test_a_crash_during_overwrite_keeps_the_old_folder(corpus, tmp_path, monkeypatch):
    out = tmp_path / "data"
    small_prepare(corpus, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(P, "encode_documents", lambda *a: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        small_prepare(corpus, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_train_refuses_a_folder_without_its_completion_marker(tmp_path):
    from minillm.train import TrainConfig, train

    folder = tmp_path / "half"
    pack_tokens(np.arange(500) % 50, folder / "train.bin", 64)
    pack_tokens(np.arange(500) % 50, folder / "val.bin", 64)  # but no meta.json
    config = TrainConfig(data_dir=str(folder), out_dir=str(tmp_path / "run"), max_steps=1)
    with pytest.raises(FileNotFoundError, match="completely"):
        train(config)


def test_verify_data_dir_catches_a_truncated_shard(corpus, tmp_path):
    out = tmp_path / "data"
    small_prepare(corpus, out)
    assert P.verify_data_dir(out, deep=True) is not None
    shard = out / "train.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(ValueError, match="train.bin has"):
        P.verify_data_dir(out)
