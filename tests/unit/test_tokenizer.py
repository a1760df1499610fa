"""minillm.tokenizer: training, encoding, special tokens, streaming, saving, bad input."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.tokenizer import ENDOFTEXT, FORMAT_VERSION, GPT4_PATTERN, BPETokenizer

SETTINGS = settings(max_examples=150, deadline=None)
# Tiny corpora run out of pairs before reaching the vocabulary size; that warning is tested once.
pytestmark = pytest.mark.filterwarnings("ignore:the corpus ran out of pairs:UserWarning")

# Text made of the pieces that stress a byte-level tokenizer: contractions, runs of spaces and
# newlines, digits, punctuation, accents (composed and combining), CJK, emoji, special tokens.
FRAGMENTS = [
    "the",
    " the",
    "The",
    " Hamlet",
    "'s",
    "'ll",
    "'VE",
    " '",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    " \n ",
    "123",
    "4567",
    " 89",
    "3.14",
    "!",
    "?!",
    " --",
    "...",
    ",",
    "é",
    "e\u0301",
    "\u0301",
    "ñ",
    "中文",
    "日本語",
    " 한국어",
    "😀",
    "👩‍👩‍👧",
    "🇫🇷",
    "\u200b",
    "\x00",
    "ÿ",
    ENDOFTEXT,
    "<|",
    "|>",
    "endoftext",
]
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), min_size=0, max_size=30).map(
    "".join
)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """The raw bundled Shakespeare corpus, one str per text."""
    from minillm.data import load_corpus

    return [doc.text for doc in load_corpus("shakespeare")]


@pytest.fixture(scope="module")
def sample(corpus) -> str:
    """About 200 kB of the corpus: enough for a meaningful vocabulary, quick to train on."""
    return "".join(corpus)[:200_000]


@pytest.fixture(scope="module")
def trained(sample) -> BPETokenizer:
    return BPETokenizer.train(sample, 512)


@pytest.fixture(scope="module")
def gpt4_tokenizer(sample) -> BPETokenizer:
    return BPETokenizer.train(sample[:50_000], 400, pattern="gpt4")


# --- training --------------------------------------------------------------------------------


def test_train_sizes_and_special_ids(trained):
    assert trained.vocab_size == 512
    assert trained.special_tokens == {ENDOFTEXT: 511}
    assert trained.eot_id == 511
    assert len(trained.merges) >= 511 - 256  # aliases (existing bytes) add merges, not ids
    assert all(len(trained.token_bytes(i)) >= 2 for i in range(256, 511))


def test_fast_and_naive_trainers_give_identical_merges_on_the_corpus(sample):
    text = sample[:60_000]
    fast = BPETokenizer.train(text, 400, special_tokens=())
    naive = BPETokenizer.train(text, 400, special_tokens=(), naive=True)
    assert len(fast.merges) == 144
    assert fast.merges == naive.merges


@SETTINGS
@given(st.lists(st.text(alphabet="ab c\n", max_size=30), min_size=1, max_size=8))
def test_fast_and_naive_agree_on_tie_heavy_text(documents):
    if not "".join(documents):
        return
    fast = BPETokenizer.train(documents, 300, special_tokens=())
    naive = BPETokenizer.train(documents, 300, special_tokens=(), naive=True)
    assert fast.merges == naive.merges


@settings(max_examples=60, deadline=None)
@given(st.lists(texts, min_size=2, max_size=6), st.randoms(use_true_random=False))
def test_merges_do_not_depend_on_document_order(documents, rng):
    if not "".join(documents).replace(ENDOFTEXT, ""):
        return
    shuffled = list(documents)
    rng.shuffle(shuffled)
    first = BPETokenizer.train(documents, 320)
    second = BPETokenizer.train(shuffled, 320)
    assert first.merges == second.merges


def test_ties_go_to_the_greatest_pair_as_bytes():
    # every adjacent pair of "abcd" occurs once: the greatest pair is (c, d)
    tok = BPETokenizer.train("abcd", 257, special_tokens=())
    assert tok.merges == [(ord("c"), ord("d"), 256)]
    # a longer left token beats its prefix: (b"ab", x) > (b"a", x) as bytes
    tok = BPETokenizer.train(["xy", "xy", "ab", "ab"], 258, special_tokens=())
    assert tok.merges[0] == (ord("x"), ord("y"), 256)  # ties (a,b),(x,y): (x,y) is greater


def test_a_second_route_to_existing_bytes_reuses_the_id():
    # "ab"+"c" is learnt, then "a"+"bc" yields the same bytes "abc": no duplicate id
    tok = BPETokenizer.train(["abc"] * 3 + [" bc"] * 5 + [" ab"] * 4, 270, special_tokens=())
    tokens = [tok.token_bytes(i) for i in range(tok.vocab_size)]
    assert len(tokens) == len(set(tokens))


def test_special_token_strings_in_training_text_are_never_merged():
    tok = BPETokenizer.train(("<|endoftext|>hello " * 50), 300)
    merged = {tok.token_bytes(i) for i in range(256, tok.eot_id)}
    assert not any(b"<|" in t or b"|>" in t for t in merged)


def test_gpt4_pattern_splits_numbers_in_threes():
    tok = BPETokenizer.train("1234567 12 " * 20, 300, pattern="gpt4")
    assert tok.pattern == GPT4_PATTERN
    pieces = [tok.decode([i]) for i in tok.encode("1234567")]
    assert "".join(pieces) == "1234567"
    assert all(len(p) <= 3 for p in pieces)


def test_custom_pattern():
    tok = BPETokenizer.train("aa bb aa bb", 260, pattern=r"\S+|\s+", special_tokens=())
    assert tok.decode(tok.encode("aa bb")) == "aa bb"


# --- encoding and decoding -------------------------------------------------------------------


@SETTINGS
@given(texts)
def test_decode_inverts_encode(trained, text):
    ids = trained.encode(text, disallowed_special=())
    assert trained.decode(ids) == text
    assert trained.decode_bytes(ids) == text.encode("utf-8")


@SETTINGS
@given(st.text())
def test_decode_inverts_encode_for_any_valid_str(trained, text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are not valid text
    assert trained.decode(trained.encode(text, disallowed_special=())) == text


@SETTINGS
@given(texts)
def test_to_tiktoken_gives_identical_ids(trained, text):
    encoding = trained.to_tiktoken()
    assert encoding.encode(text, allowed_special="all") == trained.encode(
        text, allowed_special="all"
    )
    assert encoding.encode_ordinary(text) == trained.encode_ordinary(text)


def test_to_tiktoken_on_the_sample(trained, sample):
    assert trained.to_tiktoken().encode(sample) == trained.encode(sample)


def test_decode_replaces_invalid_utf8_and_decode_bytes_is_exact(trained):
    lone = [0xC3]  # a trained tokenizer gives byte b the id b; 0xC3 alone is not UTF-8
    assert trained.decode(lone) == "\ufffd"
    assert trained.decode_bytes(lone) == b"\xc3"
    assert trained.decode(trained.encode("é")) == "é"


def test_special_token_semantics(trained):
    eot = trained.eot_id
    text = f"a{ENDOFTEXT} b"
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>'.*allowed_special"):
        trained.encode(text)
    as_special = trained.encode(text, allowed_special={ENDOFTEXT})
    assert as_special == trained.encode("a") + [eot] + trained.encode(" b")
    assert trained.encode(text, allowed_special="all") == as_special
    as_text = trained.encode(text, disallowed_special=())
    assert eot not in as_text
    assert trained.decode(as_text) == text
    with pytest.raises(ValueError, match="not special tokens"):
        trained.encode("x", allowed_special={"<|nope|>"})


def test_overlapping_special_tokens_longest_match_wins():
    tok = BPETokenizer.train("hello world " * 10, 270, special_tokens=["<|x", "<|x|>", "|>"])
    ids = tok.encode("a<|x|>b<|xb", allowed_special="all")
    specials = tok.special_tokens
    assert specials["<|x|>"] in ids and specials["<|x"] in ids
    assert specials["|>"] not in ids
    assert tok.decode(ids) == "a<|x|>b<|xb"


@SETTINGS
@given(texts, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_encode_iterable_equals_encode(trained, text, cuts):
    text = text * 3  # longer than the stream's safety margin, so chunks are cut mid-stream
    points = sorted({min(c * 7 % (len(text) + 1), len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in itertools.pairwise([0, *points, len(text)])]
    streamed = list(trained.encode_iterable(pieces, allowed_special="all"))
    assert streamed == trained.encode(text, allowed_special="all")


@SETTINGS
@given(texts, st.integers(min_value=1, max_value=50))
def test_encode_iterable_with_the_gpt4_pattern(gpt4_tokenizer, text, piece_size):
    text = text * 4
    pieces = [text[i : i + piece_size] for i in range(0, len(text), piece_size)]
    expected = gpt4_tokenizer.encode(text, allowed_special="all")
    assert list(gpt4_tokenizer.encode_iterable(pieces, allowed_special="all")) == expected


def test_encode_iterable_keeps_a_contraction_split_across_pieces(trained):
    pieces = ["x" * 200 + " we'", "ll go" + " " * 100, "\n" + "y" * 100]
    assert list(trained.encode_iterable(pieces)) == trained.encode("".join(pieces))


def test_encode_iterable_streams_a_large_file_line_by_line(trained, corpus, tmp_path):
    path = tmp_path / "corpus.txt"
    text = corpus[0] + ENDOFTEXT + corpus[1]
    path.write_text(text, encoding="utf-8")
    with open(path, encoding="utf-8", newline="") as f:
        streamed = list(trained.encode_iterable(f, allowed_special="all"))
    assert streamed == trained.encode(text, allowed_special="all")


def test_encode_iterable_is_lazy_on_an_endless_stream(trained):
    endless = itertools.cycle(["To be, or not to be: that is the question.\n"])
    first = list(itertools.islice(trained.encode_iterable(endless), 2000))
    assert len(first) == 2000
    assert trained.decode(first).startswith("To be, or not to be")


def test_encode_iterable_raises_on_a_disallowed_special_split_across_pieces(trained):
    pieces = ["x" * 200, "<|endof", "text|>", "y" * 200]
    with pytest.raises(ValueError, match="allowed_special"):
        list(trained.encode_iterable(pieces))


# --- saving and loading ----------------------------------------------------------------------


def test_save_load_round_trip(trained, sample, tmp_path):
    path = trained.save(tmp_path / "tok.bpe")
    assert path.read_text(encoding="utf-8").startswith(f"minillm-bpe {FORMAT_VERSION}\n")
    loaded = BPETokenizer.load(path)
    assert loaded.merges == trained.merges
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.pattern == trained.pattern
    assert loaded.encode(sample[:20_000]) == trained.encode(sample[:20_000])


def test_save_leaves_no_temporary_files(trained, tmp_path):
    trained.save(tmp_path / "tok.bpe")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.bpe"]


def _corrupt(tmp_path: Path, trained: BPETokenizer, edit) -> Path:
    path = trained.save(tmp_path / "tok.bpe")
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join(edit(lines)), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: [f"minillm-bpe {FORMAT_VERSION + 1}", *ls[1:]], "newer"),
        (lambda ls: ["something else", *ls[1:]], "not a minillm-bpe file"),
        (lambda ls: ls[:100], "ends early"),
        (lambda ls: [*ls[:10], "9 zz", *ls[11:]], "not hexadecimal"),
        (lambda ls: [*ls[:10], "nine 09", *ls[11:]], "not an integer"),
        (lambda ls: [*ls[:-1], "extra", ""], "unexpected extra content"),
        (lambda ls: [*ls[:10], ls[11], *ls[11:]], "share an id|invalid"),
    ],
)
def test_load_rejects_bad_files_naming_the_file(trained, tmp_path, edit, message):
    path = _corrupt(tmp_path, trained, edit)
    with pytest.raises(ValueError, match=message) as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)


def test_load_rejects_binary_files(tmp_path):
    path = tmp_path / "bin.bpe"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="bin.bpe"):
        BPETokenizer.load(path)


# --- bad input -------------------------------------------------------------------------------


def test_vocab_size_below_the_minimum_names_it():
    with pytest.raises(ValueError, match="minimum is 257"):
        BPETokenizer.train("hello", 256)
    with pytest.raises(ValueError, match="minimum is 258"):
        BPETokenizer.train("hello", 257, special_tokens=["<a>", "<b>"])
    assert BPETokenizer.train("hello", 256, special_tokens=()).vocab_size == 256


@pytest.mark.parametrize("bad", [b"bytes", 42, None, ["ok", 3]])
def test_non_str_text_is_a_type_error(trained, bad):
    with pytest.raises(TypeError):
        BPETokenizer.train(bad, 300)
    if not isinstance(bad, list):
        with pytest.raises(TypeError, match="str"):
            trained.encode(bad)


def test_encode_iterable_rejects_non_str_pieces(trained):
    with pytest.raises(TypeError, match="piece 1"):
        list(trained.encode_iterable(["ok", b"bytes"]))


def test_decode_of_an_unknown_id_names_it(trained):
    with pytest.raises(ValueError, match="unknown token id 99999"):
        trained.decode([1, 2, 99999])
    with pytest.raises(ValueError, match="-1"):
        trained.decode_bytes(iter([5, -1]))
    with pytest.raises(ValueError, match=r"\[1\]"):
        trained.decode([[1]])


@pytest.mark.parametrize("empty", ["", [], ["", ""], [ENDOFTEXT]])
def test_an_empty_corpus_is_a_clear_error(empty):
    with pytest.raises(ValueError, match="empty corpus"):
        BPETokenizer.train(empty, 300)


def test_bad_pattern_and_special_tokens():
    with pytest.raises(ValueError, match="valid regex"):
        BPETokenizer.train("hello", 300, pattern="(unclosed")
    with pytest.raises(ValueError, match="repeat"):
        BPETokenizer.train("hello", 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match="non-empty"):
        BPETokenizer.train("hello", 300, special_tokens=[""])


def test_running_out_of_pairs_warns_and_keeps_what_it_learnt():
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok = BPETokenizer.train("ab", 300, special_tokens=())
    assert tok.vocab_size == 257
    assert tok.encode("ab") == [256]


def test_the_training_order_of_documents_vs_one_string():
    # an iterable keeps documents apart: no pre-token spans two of them
    tok = BPETokenizer.train(["ab", "cd"] * 5, 300, special_tokens=(), pattern=r"(?s).+")
    learnt = {tok.token_bytes(i) for i in range(256, tok.vocab_size)}
    assert b"bc" not in learnt
    assert {b"ab", b"cd"} <= learnt


def test_random_round_trip_with_a_seeded_generator(trained):
    rng = random.Random(0)
    text = "".join(rng.choice(FRAGMENTS) for _ in range(2000))
    assert trained.decode(trained.encode(text, allowed_special="all")) == text
