"""The corpus pipeline (lesson 01): load, clean, deduplicate, split by document, and count."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from minillm.data.cleaning import clean_text, quality_filter, scrub_pii
from minillm.data.corpus import (
    BUNDLED_CORPORA,
    SPLIT_NAMES,
    Document,
    _check_documents,
    load_corpus,
)
from minillm.data.deduplication import dedup, modern_spelling_first

__all__ = ["prepare_corpus", "split_documents", "corpus_stats"]


def prepare_corpus(name: Any = "shakespeare") -> list[Document]:
    """The cleaned, filtered, deduplicated, PII-scrubbed corpus, deterministically.

    ``load_corpus -> clean_text -> quality_filter -> dedup(prefer=modern_spelling_first)
    -> scrub_pii``, all at their defaults. For Shakespeare: 77 texts in, 42 out (the 35 First
    Folio editions go). ``name`` is anything :func:`load_corpus` accepts.

    Raises:
        ValueError: the corpus is empty after filtering.
    """
    if isinstance(name, str) and name in BUNDLED_CORPORA:
        return list(_prepare_bundled(name))
    return _prepare(load_corpus(name))


@functools.lru_cache(maxsize=4)
def _prepare_bundled(name: str) -> tuple[Document, ...]:
    return tuple(_prepare(load_corpus(name)))


def _prepare(raw: list[Document]) -> list[Document]:
    cleaned = [_replace_text(d, clean_text(d.text)) for d in raw]
    kept = quality_filter(cleaned)
    if not kept:
        raise ValueError(f"all {len(raw)} documents failed the quality filters; nothing is left")
    unique = dedup(kept, prefer=modern_spelling_first)
    return [_replace_text(d, scrub_pii(d.text)) for d in unique]


def _replace_text(doc: Document, text: str) -> Document:
    return Document(name=doc.name, text=text, title=doc.title, source=doc.source)


def split_documents(
    docs: Sequence[Document], fractions: Sequence[float] = (0.9, 0.05, 0.05), seed: int = 0
) -> dict[str, list[Document]]:
    """Split by document into train/val/test, deterministically and independently of input order.

    Documents are ordered by ``sha256(f"{seed}:{name}")`` and cut by counts (largest remainder,
    so counts sum to the number of documents); every split with a positive fraction gets at least
    one document. Within a split, documents keep their input order. Splitting by document, not
    by line, keeps the lines of one play out of the test set when the play is in train.

    Args:
        docs: documents with unique names.
        fractions: three non-negative shares (train, val, test) summing to 1; train's is positive.
        seed: changes the assignment.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        ValueError: bad fractions, duplicate names, or fewer documents than non-empty splits.
    """
    _check_documents(docs)
    fractions = _check_fractions(fractions)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    names = [d.name for d in docs]
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})[:5]
        raise ValueError(f"document names must be unique to split by name; repeated: {duplicated}")
    needed = sum(f > 0 for f in fractions)
    if len(docs) < needed:
        raise ValueError(
            f"{len(docs)} document(s) cannot fill {needed} non-empty splits; give more documents"
        )
    counts = _split_counts(len(docs), fractions)
    order = sorted(
        range(len(docs)), key=lambda i: hashlib.sha256(f"{seed}:{names[i]}".encode()).hexdigest()
    )
    assignment: dict[int, str] = {}
    start = 0
    for split_name, count in zip(SPLIT_NAMES, counts, strict=True):
        for index in order[start : start + count]:
            assignment[index] = split_name
        start += count
    return {s: [d for i, d in enumerate(docs) if assignment[i] == s] for s in SPLIT_NAMES}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if (
        isinstance(fractions, (str, bytes))
        or not isinstance(fractions, Sequence)
        or len(fractions) != 3
    ):
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions):
        raise TypeError(f"fractions must be numbers, got {fractions!r}")
    if any(f < 0 for f in fractions) or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be non-negative, sum to 1 and give train a positive share; got {tuple(fractions)}"
        )
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    exact = [f * n for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    for k in range(3):  # a positive share never ends up empty: take from the largest split
        if fractions[k] > 0 and counts[k] == 0:
            counts[max(range(3), key=lambda j: counts[j])] -= 1
            counts[k] = 1
    return counts


def corpus_stats(docs: Sequence[Document]) -> dict[str, int]:
    """Sizes of a corpus: documents, characters, UTF-8 bytes, words, lines."""
    return {
        "documents": len(docs),
        "characters": sum(len(d.text) for d in docs),
        "bytes": sum(len(d.text.encode("utf-8")) for d in docs),
        "words": sum(len(d.text.split()) for d in docs),
        "lines": sum(d.text.count("\n") + 1 for d in docs if d.text),
    }
