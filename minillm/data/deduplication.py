"""Duplicate removal (lesson 01): exact hashes, shingles, MinHash signatures, LSH banding and
the near-duplicate editions of the same play.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from minillm.data.corpus import Document, _check_documents

__all__ = [
    "text_hash",
    "shingle_hashes",
    "jaccard",
    "MinHasher",
    "estimate_jaccard",
    "lsh_candidate_pairs",
    "NearDuplicate",
    "find_near_duplicates",
    "modern_spelling_first",
    "dedup",
    "known_edition_pairs",
]


_WORD = re.compile(r"[^\W\d_]+")  # runs of letters, any script


_SHINGLE_BASE = np.uint64(
    0x100000001B3
)  # odd multiplier of the polynomial that hashes word n-grams


_SHIFT = np.uint64(32)


def text_hash(text: str) -> str:
    """SHA-256 of the UTF-8 text: equal hashes mean identical documents."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shingle_hashes(text: str, shingle_size: int = 3) -> np.ndarray:
    """The set of word n-grams ("shingles") of a text, as sorted unique 64-bit hashes.

    Words are the lower-cased runs of letters (punctuation, digits and layout are ignored, so two
    editions that differ only in punctuation share their shingles). Each word hashes to its
    CRC-32; an n-gram ``w1 .. wn`` hashes to ``(..((h(w1)·B + h(w2))·B + ..) + h(wn)) mod 2**64``
    with ``B = 0x100000001B3``. A text shorter than ``shingle_size`` words is one shingle.

    Returns:
        ``uint64`` array of shape ``(number of distinct shingles,)``.
    """
    if not isinstance(shingle_size, int) or shingle_size < 1:
        raise ValueError(f"shingle_size must be a positive int, got {shingle_size!r}")
    words = _WORD.findall(text.lower())
    if not words:
        return np.empty(0, dtype=np.uint64)
    vocab = {word: index for index, word in enumerate(dict.fromkeys(words))}  # distinct words
    word_ids = np.fromiter(map(vocab.__getitem__, words), np.int64, len(words))
    word_hash_table = np.fromiter((zlib.crc32(w.encode()) for w in vocab), np.uint64, len(vocab))
    word_hashes = word_hash_table[word_ids]  # (n_words,): each word's CRC-32
    n = min(shingle_size, len(words))
    count = len(words) - n + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(n):  # polynomial rolling hash; uint64 arithmetic wraps mod 2**64
        hashes = hashes * _SHINGLE_BASE + word_hashes[offset : offset + count]
    return np.unique(hashes)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity ``|A ∩ B| / |A ∪ B|`` of two sets given as unique arrays (0.0 if both empty)."""
    union = np.union1d(a, b).size
    return np.intersect1d(a, b, assume_unique=True).size / union if union else 0.0


class MinHasher:
    """MinHash signatures: ``num_perm`` random hash functions, keeping each one's minimum.

    Hash function ``i`` maps a 64-bit shingle hash ``x`` to ``(a_i·x + b_i) mod 2**64 >> 32``
    (multiply-shift hashing; ``a_i`` odd). Two sets agree on a given minimum with probability
    equal to their Jaccard similarity, so the share of equal signature entries estimates it.
    ``a`` and ``b`` come from ``numpy.random.default_rng(seed)``: ``a`` first, then ``b``,
    each ``integers(0, 2**64, size=num_perm, dtype=uint64)``, and ``a |= 1``.
    """

    def __init__(self, num_perm: int = 256, seed: int = 0, shingle_size: int = 3) -> None:
        if not isinstance(num_perm, int) or num_perm < 1:
            raise ValueError(f"num_perm must be a positive int, got {num_perm!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not isinstance(shingle_size, int) or shingle_size < 1:
            raise ValueError(f"shingle_size must be a positive int, got {shingle_size!r}")
        self.num_perm, self.seed, self.shingle_size = num_perm, seed, shingle_size
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)

    def signature(self, text_or_shingles: str | np.ndarray, chunk: int = 2048) -> np.ndarray:
        """The ``(num_perm,)`` uint64 signature of a text or of its :func:`shingle_hashes`.

        An empty set gets the all-``2**32`` signature (larger than any real minimum).
        """
        shingles = text_or_shingles
        if isinstance(shingles, str):
            shingles = shingle_hashes(shingles, self.shingle_size)
        shingles = np.asarray(shingles, dtype=np.uint64)
        signature = np.full(self.num_perm, 2**32, dtype=np.uint64)
        # Chunks keep the (num_perm, chunk) temporary in cache: ~3x faster than one huge matrix.
        buffer = np.empty((self.num_perm, min(chunk, max(1, shingles.size))), dtype=np.uint64)
        for start in range(0, shingles.size, chunk):
            part = shingles[start : start + chunk]
            values = buffer[:, : part.size]
            np.multiply(self.a[:, None], part[None, :], out=values)
            values += self.b[:, None]
            values >>= _SHIFT
            np.minimum(signature, values.min(axis=1), out=signature)
        return signature

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """Signatures of many texts: ``(len(texts), num_perm)``."""
        rows = [self.signature(t) for t in texts]
        return np.stack(rows) if rows else np.empty((0, self.num_perm), dtype=np.uint64)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal entries of two MinHash signatures: an unbiased estimate of their Jaccard."""
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures differ in shape: {sig_a.shape} vs {sig_b.shape}")
    return float(np.mean(sig_a == sig_b))


def lsh_candidate_pairs(signatures: np.ndarray, bands: int) -> set[tuple[int, int]]:
    """Locality-sensitive hashing: pairs of rows that agree on every entry of at least one band.

    The signature is cut into ``bands`` bands of ``rows = num_perm // bands`` entries. Two
    documents with Jaccard ``s`` share a band with probability ``1 - (1 - s**rows)**bands``: an
    S-curve that is steep around ``(1 / bands) ** (1 / rows)``. Only candidates are compared,
    instead of all n² pairs.

    Args:
        signatures: ``(n_docs, num_perm)`` array; ``num_perm`` must be divisible by ``bands``.
        bands: number of bands.

    Returns:
        Index pairs ``(i, j)`` with ``i < j``.
    """
    n_docs, num_perm = signatures.shape
    if not isinstance(bands, int) or bands < 1 or num_perm % bands:
        raise ValueError(
            f"bands must be a positive int dividing num_perm={num_perm}, got {bands!r}"
        )
    rows = num_perm // bands
    empty = (signatures == 2**32).all(axis=1)  # documents without shingles never match
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for index in range(n_docs):
            if not empty[index]:
                buckets.setdefault(block[index].tobytes(), []).append(index)
        for members in buckets.values():
            pairs.update(itertools.combinations(members, 2))
    return pairs


class NearDuplicate(NamedTuple):
    """Two documents (indices into the input) whose estimated Jaccard reached the threshold."""

    first: int
    second: int
    similarity: float


def find_near_duplicates(
    texts: Sequence[str | Document],
    *,
    threshold: float = 0.1,
    num_perm: int = 256,
    bands: int = 128,
    shingle_size: int = 3,
    seed: int = 0,
) -> list[NearDuplicate]:
    """Pairs of near-duplicate texts: LSH candidates whose MinHash similarity is >= ``threshold``.

    The defaults suit the course corpus, where two editions of one play share 23-37 % of their word
    3-grams (the First Folio spells "haue", "vnfold") and different plays share at most 2 %:
    the threshold 0.1 sits in that gap, and 128 bands of 2 rows find a pair at Jaccard 0.23 with
    probability > 0.998. For web-scale text the usual choice is 5-grams with a threshold near 0.8.

    Returns:
        Pairs sorted by index, with the estimated similarity.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    strings = [t.text if isinstance(t, Document) else t for t in texts]
    for index, text in enumerate(strings):
        if not isinstance(text, str):
            raise TypeError(f"item {index} is {type(text).__name__}; expected str or Document")
    hasher = MinHasher(num_perm=num_perm, seed=seed, shingle_size=shingle_size)
    signatures = hasher.signatures(strings)
    found = []
    for i, j in sorted(lsh_candidate_pairs(signatures, bands)):
        similarity = estimate_jaccard(signatures[i], signatures[j])
        if similarity >= threshold:
            found.append(NearDuplicate(i, j, similarity))
    return found


def modern_spelling_first(doc: Document) -> int:
    """Dedup preference for the course corpus: keep the modern edition over the First Folio one.

    Folio files end in ``_gut_f``. The modern spelling is what learners type in prompts and what
    GPT-2's vocabulary knows; keeping both editions would teach the model two spellings of the
    same lines and leak text between the train and test splits.
    """
    return 0 if doc.name.endswith("_gut_f") else 1


def dedup(
    docs: Sequence[Document],
    *,
    exact: bool = True,
    near: bool = True,
    prefer: Callable[[Document], Any] | None = None,
    threshold: float = 0.1,
    num_perm: int = 256,
    bands: int = 128,
    shingle_size: int = 3,
    seed: int = 0,
) -> list[Document]:
    """Remove exact duplicates (same SHA-256) and near duplicates (MinHash + LSH).

    Duplicates are grouped transitively (if A~B and B~C, one of A, B, C stays). From each group
    the document with the largest ``prefer(doc)`` is kept; ties, and ``prefer=None``, keep the
    earliest in input order. The course corpus uses :func:`modern_spelling_first`.

    Cost stays linear in the number of copies: exact duplicates are grouped first and only one
    document per group is MinHashed; documents with identical signatures (estimated similarity
    1) are grouped next, and only distinct signatures go through LSH, whose buckets would
    otherwise hold every pair of copies (3,200 identical documents: 5 million pairs).

    Returns:
        The kept documents, in input order.
    """
    _check_documents(docs)
    parent = list(range(len(docs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(j)] = root(i)

    if exact:
        first_with_hash: dict[str, int] = {}
        for index, doc in enumerate(docs):
            join(first_with_hash.setdefault(text_hash(doc.text), index), index)
    if near:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        hasher = MinHasher(num_perm=num_perm, seed=seed, shingle_size=shingle_size)
        candidates = [i for i in range(len(docs)) if root(i) == i]  # one per exact group
        signatures = hasher.signatures(docs[i].text for i in candidates)
        first_with_signature: dict[bytes, int] = {}
        distinct: list[int] = []  # rows of `signatures` with a signature not seen before
        for row, index in enumerate(candidates):
            key = signatures[row].tobytes()
            if key in first_with_signature and not (signatures[row] == 2**32).all():
                join(candidates[first_with_signature[key]], index)  # estimated similarity 1
            else:
                first_with_signature.setdefault(key, row)
                distinct.append(row)
        kept = signatures[distinct]
        for i, j in sorted(lsh_candidate_pairs(kept, bands)):
            if estimate_jaccard(kept[i], kept[j]) >= threshold:
                join(candidates[distinct[i]], candidates[distinct[j]])
    groups: dict[int, list[int]] = {}
    for index in range(len(docs)):
        groups.setdefault(root(index), []).append(index)
    keep = set()
    for members in groups.values():
        keep.add(max(members, key=lambda i: (prefer(docs[i]) if prefer else 0, -i)))
    return [doc for index, doc in enumerate(docs) if index in keep]


_TITLE_NOISE = re.compile(r"\b(?:king|the|tragedie|tragedy|of|part)\b|[^a-z0-9]")


def _title_key(title: str) -> str:
    return _TITLE_NOISE.sub("", title.lower())


def known_edition_pairs(
    docs: Sequence[Document], min_title_similarity: float = 0.6
) -> list[tuple[str, str]]:
    """The ground truth for near-duplicate detection in the course corpus: same play, two editions.

    Pairs each First Folio text (name ending ``_gut_f``) with the modern-spelling text whose title
    (from ``metadata.txt``) is most similar, one to one, best matches first. Titles are compared
    without "King", "The", "Tragedy of", "Part" and punctuation ("The Tragedie of Hamlet" vs
    "Hamlet"; "Twelfe-Night" vs "Twelfth Night"), with :class:`difflib.SequenceMatcher`.
    Uses only names and titles, never the texts, so it is independent of what it evaluates.

    Returns:
        ``(folio name, modern name)`` pairs, sorted.
    """
    folio = [d for d in docs if d.name.endswith("_gut_f")]
    modern = [d for d in docs if d.name.endswith("_gut")]
    scored = []
    for f in folio:
        for m in modern:
            ratio = difflib.SequenceMatcher(
                None, _title_key(f.title or f.name), _title_key(m.title or m.name)
            ).ratio()
            if ratio >= min_title_similarity:
                scored.append((ratio, f.name, m.name))
    pairs, used = [], set()
    for _, f_name, m_name in sorted(scored, key=lambda s: (-s[0], s[1], s[2])):
        if f_name not in used and m_name not in used:
            pairs.append((f_name, m_name))
            used.update((f_name, m_name))
    return sorted(pairs)
