"""BPE training (lesson 02): count each distinct chunk once, keep every adjacent pair's count and
an index from each pair to the chunks that contain it, and after each merge update only those
chunks. Ties between equally frequent pairs go to the lexicographically greatest pair (left
token first, then right), so the result does not depend on the order of the documents.
``_train_naive`` (recount everything each merge) is kept for tests and benchmarks: both give
identical merges.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import regex

from minillm.tokenizer.guard import (
    split_long_whitespace,
)
from minillm.tokenizer.pretokenize import _special_regex

if TYPE_CHECKING:
    pass

__all__ = []


def _count_chunks(
    texts: Iterable[str], compiled: regex.Pattern, specials: list[str]
) -> Counter[bytes]:
    """Pre-tokenize every document once: distinct chunk (as UTF-8 bytes) -> number of times seen.

    Special-token strings in the text are cut out first, so they are never merged into others.
    """
    splitter = _special_regex(specials) if specials else None
    counts: Counter[str] = Counter()
    for text in texts:
        for part in split_long_whitespace(text):  # the encoder's cuts, so training sees its chunks
            for piece in splitter.split(part) if splitter else (part,):
                counts.update(compiled.findall(piece))
    return Counter(
        {chunk.encode("utf-8", "surrogatepass"): count for chunk, count in counts.items()}
    )


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, left to right, by ``new_id``."""
    left, right = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == left and ids[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _pair_counts(ids: list[int]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _descending(token: bytes) -> tuple[int, ...]:
    """A key that sorts byte strings in *decreasing* lexicographic order (for a min-heap).

    Each byte is flipped (255 - b) and a terminator 256 is appended, so a proper prefix sorts
    after the longer strings that extend it, as it must when the order is reversed.
    """
    return (*(255 - b for b in token), 256)


class _Vocab:
    """The growing vocabulary of a training run: id -> bytes and bytes -> id."""

    def __init__(self) -> None:
        self.tokens: list[bytes] = [bytes([b]) for b in range(256)]
        self.ids: dict[bytes, int] = {t: i for i, t in enumerate(self.tokens)}
        self.heap_keys: list[tuple[int, ...]] = [_descending(t) for t in self.tokens]

    def add(self, pair: tuple[int, int]) -> int:
        """Id of the merged pair. Its bytes may already be a token, reached by another split
        (``a + bc`` after ``ab + c``); then the existing id is reused, so every id keeps
        distinct bytes (as tiktoken requires) and the vocabulary does not grow."""
        merged = self.tokens[pair[0]] + self.tokens[pair[1]]
        if merged not in self.ids:
            self.ids[merged] = len(self.tokens)
            self.tokens.append(merged)
            self.heap_keys.append(_descending(merged))
        return self.ids[merged]

    def tie_key(self, pair: tuple[int, int]) -> tuple[bytes, bytes]:
        return self.tokens[pair[0]], self.tokens[pair[1]]


def _train_fast(
    chunk_counts: Counter[bytes], n_tokens: int, verbose: bool = False
) -> tuple[_Vocab, list[tuple[int, int, int]]]:
    """Incremental BPE training; returns the vocabulary and the merges (left, right, new id)."""
    vocab = _Vocab()
    words = [list(chunk) for chunk in chunk_counts]
    counts = list(chunk_counts.values())
    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of the words containing it
    for index, word in enumerate(words):
        for pair, k in _pair_counts(word).items():
            pair_count[pair] = pair_count.get(pair, 0) + k * counts[index]
            where.setdefault(pair, set()).add(index)

    def entry(pair: tuple[int, int]) -> tuple:
        # min-heap order: highest count first, then the greatest pair compared as bytes
        keys = vocab.heap_keys
        return (-pair_count[pair], keys[pair[0]], keys[pair[1]], pair)

    heap = [entry(pair) for pair in pair_count]
    heapq.heapify(heap)
    merges: list[tuple[int, int, int]] = []
    while len(vocab.tokens) < n_tokens and heap:
        negative_count, _, _, pair = heapq.heappop(heap)
        if pair_count.get(pair) != -negative_count:
            continue  # stale entry: the count changed after it was pushed
        new_id = vocab.add(pair)
        merges.append((*pair, new_id))
        touched: set[tuple[int, int]] = set()
        for index in where.pop(pair):
            old, new = words[index], _merge(words[index], pair, new_id)
            words[index] = new
            old_pairs, new_pairs = _pair_counts(old), _pair_counts(new)
            for p in old_pairs.keys() | new_pairs.keys():
                delta = new_pairs.get(p, 0) - old_pairs.get(p, 0)
                if delta:
                    pair_count[p] = pair_count.get(p, 0) + delta * counts[index]
                    touched.add(p)
                if p not in new_pairs:
                    if p in where:  # the merged pair itself was already popped
                        where[p].discard(index)
                elif p not in old_pairs:
                    where.setdefault(p, set()).add(index)
        for p in touched:
            if pair_count[p] > 0:
                heapq.heappush(heap, entry(p))
            else:
                del pair_count[p]
        if verbose and len(merges) % 100 == 0:
            print(f"merge {len(merges)}: {vocab.tokens[new_id]!r} ({-negative_count} times)")
    return vocab, merges


def _train_naive(
    chunk_counts: Counter[bytes], n_tokens: int
) -> tuple[_Vocab, list[tuple[int, int, int]]]:
    """The textbook trainer: recount every pair of every word before each merge (slow)."""
    vocab = _Vocab()
    words = [list(chunk) for chunk in chunk_counts]
    counts = list(chunk_counts.values())
    merges: list[tuple[int, int, int]] = []
    while len(vocab.tokens) < n_tokens:
        pair_count: dict[tuple[int, int], int] = {}
        for word, count in zip(words, counts, strict=True):
            for pair in zip(word, word[1:], strict=False):
                pair_count[pair] = pair_count.get(pair, 0) + count
        if not pair_count:
            break
        pair = max(pair_count, key=lambda p: (pair_count[p], *vocab.tie_key(p)))
        new_id = vocab.add(pair)
        merges.append((*pair, new_id))
        words = [_merge(word, pair, new_id) for word in words]
    return vocab, merges
