"""Byte-level BPE tokenizer: training, encoding, saving, and GPT-2 / tiktoken interop.

Taught in lesson 02 (tokenization). A token is a byte string; its id is its *rank*. Text is first
split into chunks by a regular expression (pre-tokenization, GPT-2 or GPT-4 style), then each
chunk's UTF-8 bytes are merged pair by pair, always the pair whose merged bytes have the lowest
rank. That is exactly tiktoken's rule, so :meth:`BPETokenizer.to_tiktoken` gives identical ids at
Rust speed, and GPT-2's own files load with :meth:`BPETokenizer.from_gpt2_files`.

Training (:meth:`BPETokenizer.train`) counts each distinct chunk once, keeps the count of every
adjacent pair and an index from each pair to the chunks that contain it, and after each merge
updates only those chunks. Ties between equally frequent pairs go to the lexicographically
greatest pair, compared as bytes (left token first, then right token), so the result does not
depend on the order of the input documents. ``_train_naive`` (recount everything each merge) is
kept for tests and benchmarks: both produce identical merges.

Saved files (:meth:`BPETokenizer.save`) are UTF-8 text, one record per line::

    minillm-bpe 1                  format name and version
    name "my-tokenizer"            JSON string
    pattern "'(?:[sdmt]|ll|...)"   JSON string: the pre-tokenization regex
    tokens 260                     then one line per token: "<id> <hex of its bytes>", ids ascending
    0 00
    ...
    merges 4                       then one line per merge, in training order: "<left> <right> <new>"
    101 32 256
    ...
    specials 1                     then one line per special token: "<id> <JSON string>"
    260 "<|endoftext|>"
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence, Set
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn

import regex

from minillm.tokenizer_guard import (
    HEAP_MERGE_MIN_BYTES,
    WhitespaceCutter,
    check_pattern_covers,
    check_vocabulary,
    merge_bytes_heap,
    split_long_whitespace,
)

if TYPE_CHECKING:
    import tiktoken

GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
"""GPT-2's pre-tokenization regex, in tiktoken's equivalent faster form."""

GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
"""GPT-4's (cl100k_base) pre-tokenization regex: numbers in groups of at most three digits."""

PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
ENDOFTEXT = "<|endoftext|>"
FORMAT_NAME = "minillm-bpe"
FORMAT_VERSION = 1

GPT2_DIR = Path(__file__).resolve().parent / "assets" / "gpt2"
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_URLS = {  # where tiktoken downloads them from; its cache names a file by the sha1 of its URL
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}

_CACHE_LIMIT = 200_000  # chunk -> ids entries kept by the encoder before the cache is cleared
_STREAM_MARGIN = 64  # characters held back at a buffer's end by encode_iterable (see there)


# ---------------------------------------------------------------------------------------------
# Helpers shared by training and encoding
# ---------------------------------------------------------------------------------------------


def _compile_pattern(pattern: str) -> tuple[str, regex.Pattern]:
    """Resolve "gpt2"/"gpt4" or compile a custom regex; return (pattern string, compiled)."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be 'gpt2', 'gpt4' or a regex string, got {type(pattern)}")
    source = PATTERNS.get(pattern, pattern)
    try:
        compiled = regex.compile(source)
    except regex.error as err:
        raise ValueError(
            f"pattern {pattern!r} is neither 'gpt2', 'gpt4' nor a valid regex: {err}"
        ) from err
    check_pattern_covers(compiled, source)
    return source, compiled


def _special_regex(specials: Iterable[str]) -> regex.Pattern:
    """A regex matching any of ``specials``; on overlap at one position the longest wins."""
    ordered = sorted(specials, key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in ordered))


def _texts(text_or_iterable: str | Iterable[str]) -> Iterator[str]:
    """Yield the documents of a str or an iterable of str, checking their type."""
    if isinstance(text_or_iterable, str):
        yield text_or_iterable
        return
    if isinstance(text_or_iterable, (bytes, bytearray)) or not isinstance(
        text_or_iterable, Iterable
    ):
        raise TypeError(
            f"expected a str or an iterable of str, got {type(text_or_iterable).__name__}"
        )
    for index, text in enumerate(text_or_iterable):
        if not isinstance(text, str):
            raise TypeError(f"document {index} is {type(text).__name__}, expected str")
        yield text


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (used in its files).

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space, ...) are shifted
    to code points 256 and up, in byte order.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


class _ChunkCache(dict):
    """chunk -> ids. A hit is a plain dict lookup (in C); a miss computes and stores the ids.

    Cleared when it holds ``_CACHE_LIMIT`` chunks, so memory stays bounded on endless streams.
    """

    def __init__(self, compute: Callable[[str], list[int]]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, chunk: str) -> list[int]:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        ids = self[chunk] = self.compute(chunk)
        return ids


class BPETokenizer:
    """A byte-level BPE tokenizer with tiktoken's encoding rule and special-token semantics.

    Build one with :meth:`train`, :meth:`load`, :meth:`from_gpt2_files` or :meth:`gpt2`.

    Args:
        ranks: every ordinary token's bytes -> its id (its merge priority: lower merges first).
            All 256 single bytes must be present.
        pattern: "gpt2", "gpt4" or a pre-tokenization regex.
        special_tokens: special token string -> id (ids distinct from the ordinary ones).
        merges: optional (left id, right id, new id) triples in training order, for inspection.
        name: a label, also used as the tiktoken encoding name.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str = "gpt2",
        special_tokens: dict[str, int] | None = None,
        merges: list[tuple[int, int, int]] | None = None,
        name: str = "minillm-bpe",
    ) -> None:
        self.pattern, self._compiled = _compile_pattern(pattern)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"ranks must contain all 256 single bytes; missing {missing[:5]}...")
        self._ranks = dict(ranks)
        self._special = dict(special_tokens or {})
        self._decoder: dict[int, bytes] = {i: t for t, i in self._ranks.items()}
        if len(self._decoder) != len(self._ranks):
            raise ValueError("two tokens share an id in ranks")
        for text, i in self._special.items():
            if not text:
                raise ValueError("a special token must be a non-empty string")
            if i in self._decoder:
                raise ValueError(f"special token {text!r} reuses id {i} of an ordinary token")
            self._decoder[i] = text.encode("utf-8")
        if len(self._decoder) != len(self._ranks) + len(self._special):
            raise ValueError("two special tokens share an id")
        self.merges = list(merges or [])
        self.name = name
        self._byte_ids = [self._ranks[bytes([b])] for b in range(256)]
        self._cache = _ChunkCache(self._merge_chunk)
        self._special_regexes: dict[frozenset[str], regex.Pattern] = {}

    # --- properties -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids (largest id + 1), special tokens included: the model's embedding rows."""
        return max(self._decoder) + 1

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token string -> id (a copy)."""
        return dict(self._special)

    @property
    def eot_id(self) -> int:
        """Id of ``<|endoftext|>``.

        Raises:
            KeyError: the tokenizer has no such special token.
        """
        if ENDOFTEXT not in self._special:
            raise KeyError(f"this tokenizer has no {ENDOFTEXT} token; it has {list(self._special)}")
        return self._special[ENDOFTEXT]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (special tokens: their UTF-8 text)."""
        return self.decode_bytes([token_id])

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"special_tokens={self._special})"
        )

    # --- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text_or_iterable: str | Iterable[str],
        vocab_size: int,
        pattern: str = "gpt2",
        special_tokens: Iterable[str] | None = None,
        verbose: bool = False,
        *,
        naive: bool = False,
        name: str = "minillm-bpe",
    ) -> BPETokenizer:
        """Train a byte-level BPE tokenizer.

        Args:
            text_or_iterable: one str, or an iterable of str documents (pre-tokenized separately;
                the result does not depend on their order).
            vocab_size: total number of ids: 256 bytes + merges + special tokens.
            pattern: "gpt2", "gpt4" or a custom pre-tokenization regex.
            special_tokens: strings given their own ids after the merges. ``None`` means
                ``["<|endoftext|>"]``; pass ``()`` for none.
            verbose: print every 100th merge.
            naive: use the slow trainer that recounts every pair before each merge (for
                comparisons; the merges are identical).
            name: a label for the tokenizer.

        Returns:
            The trained tokenizer; ``merges`` lists (left, right, new id) in order. If the corpus
            runs out of pairs first, the vocabulary is smaller than asked (with a warning).

        Raises:
            ValueError: ``vocab_size`` is below 256 + the number of special tokens, a special
                token is empty or repeated, or the corpus is empty.
            TypeError: the text is not a str or an iterable of str.
        """
        specials = [ENDOFTEXT] if special_tokens is None else list(special_tokens)
        if any(not isinstance(s, str) or not s for s in specials):
            raise ValueError(f"special tokens must be non-empty strings, got {specials!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens repeat: {specials!r}")
        minimum = 256 + len(specials)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the minimum is {minimum} "
                f"(256 byte tokens + {len(specials)} special tokens)"
            )
        source, compiled = _compile_pattern(pattern)
        chunk_counts = _count_chunks(_texts(text_or_iterable), compiled, specials)
        if not chunk_counts:
            raise ValueError(
                "cannot train a tokenizer on an empty corpus: the text (after removing special "
                "tokens) contains no characters"
            )
        n_tokens = vocab_size - len(specials)
        if naive:
            vocab, merges = _train_naive(chunk_counts, n_tokens)
        else:
            vocab, merges = _train_fast(chunk_counts, n_tokens, verbose)
        if len(vocab.tokens) < n_tokens:
            warnings.warn(
                f"the corpus ran out of pairs to merge: vocabulary has {len(vocab.tokens)} "
                f"ordinary tokens instead of {n_tokens}",
                stacklevel=2,
            )
        first_special = len(vocab.tokens)
        special_ids = {s: first_special + i for i, s in enumerate(specials)}
        return cls(vocab.ids, source, special_ids, merges, name)

    # --- encoding ---------------------------------------------------------------------------

    def _bpe(self, chunk: str) -> list[int]:
        """Ids of one pre-tokenized chunk, from the cache or computed by :meth:`_merge_chunk`."""
        return self._cache[chunk]

    def _merge_chunk(self, chunk: str) -> list[int]:
        """Merge the chunk's bytes, always the adjacent pair whose merged bytes rank lowest."""
        data = chunk.encode("utf-8")
        ranks = self._ranks
        whole = ranks.get(data)
        if whole is not None:  # the whole chunk is one token (tiktoken's shortcut)
            return [whole]
        if len(data) >= HEAP_MERGE_MIN_BYTES:  # the scan below is quadratic in the length
            return [ranks[p] for p in merge_bytes_heap(data, ranks)]
        parts = [data[i : i + 1] for i in range(len(data))]
        while len(parts) > 1:
            best_rank, best_i = None, -1
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_i = rank, i
            if best_rank is None:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        return [ranks[p] for p in parts]

    def _resolve_specials(
        self,
        allowed_special: Literal["all"] | Set[str],
        disallowed_special: Literal["all"] | Set[str],
    ) -> tuple[frozenset[str], frozenset[str]]:
        names = frozenset(self._special)
        if allowed_special == "all":
            allowed = names
        else:
            allowed = frozenset(allowed_special)
            unknown = allowed - names
            if unknown:
                raise ValueError(
                    f"allowed_special names {sorted(unknown)}, which are not special tokens of "
                    f"this tokenizer; its special tokens are {sorted(names)}"
                )
        disallowed = (
            names - allowed if disallowed_special == "all" else frozenset(disallowed_special)
        )
        return allowed, disallowed

    def _regex_for(self, specials: frozenset[str]) -> regex.Pattern:
        compiled = self._special_regexes.get(specials)
        if compiled is None:
            compiled = self._special_regexes[specials] = _special_regex(specials)
        return compiled

    def _check_disallowed(self, text: str, disallowed: frozenset[str]) -> None:
        if not disallowed:
            return
        found = self._regex_for(disallowed).search(text)
        if found:
            token = found.group()
            raise ValueError(
                f"the text contains the special token {token!r} at character {found.start()}, "
                f"which is disallowed. Pass allowed_special={{{token!r}}} (or 'all') to encode it "
                f"as the special token, or disallowed_special=() to encode it as ordinary text."
            )

    def _segments(
        self, text: str, allowed: frozenset[str]
    ) -> Iterator[tuple[int, int, int | None]]:
        """(start, end, special id or None) for each special token and pre-token, in order.

        Text between allowed special tokens is pre-tokenized separately, as tiktoken does.
        """
        start = 0
        special_matches = self._regex_for(allowed).finditer(text) if allowed else ()
        for special in special_matches:
            yield from self._pretoken_spans(text, start, special.start())
            yield special.start(), special.end(), self._special[special.group()]
            start = special.end()
        yield from self._pretoken_spans(text, start, len(text))

    def _pretoken_spans(self, text: str, start: int, end: int) -> Iterator[tuple[int, int, None]]:
        for match in self._compiled.finditer(text[start:end]):
            yield start + match.start(), start + match.end(), None

    def _encode_checked(self, text: str, allowed: frozenset[str]) -> list[int]:
        ids: list[int] = []
        for part in split_long_whitespace(text):  # [text] unless a whitespace run is huge
            self._encode_part(part, allowed, ids)
        return ids

    def _encode_part(self, text: str, allowed: frozenset[str], ids: list[int]) -> None:
        lookup, findall = self._cache.__getitem__, self._compiled.findall
        pieces = self._regex_for(allowed).split(text) if allowed else [text]
        # re.split without groups drops the separators: find them again to interleave their ids
        specials = self._regex_for(allowed).findall(text) if allowed else []
        for index, piece in enumerate(pieces):
            # map/chain run in C; only a chunk missing from the cache calls back into Python
            ids.extend(chain.from_iterable(map(lookup, findall(piece))))
            if index < len(specials):
                ids.append(self._special[specials[index]])

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Set[str] = frozenset(),
        disallowed_special: Literal["all"] | Set[str] = "all",
    ) -> list[int]:
        """Encode a string to ids, with tiktoken's special-token semantics.

        Args:
            text: the string.
            allowed_special: special tokens to encode as their id ("all" for every one).
            disallowed_special: special tokens whose presence is an error ("all": every special
                token not allowed). Those in neither set are encoded as ordinary text.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: the text contains a disallowed special token (the message names it and
                the parameter that allows it), or ``allowed_special`` names an unknown token.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        allowed, disallowed = self._resolve_specials(allowed_special, disallowed_special)
        self._check_disallowed(text, disallowed)
        try:
            return self._encode_checked(text, allowed)
        except UnicodeEncodeError:
            # lone surrogates cannot be UTF-8 encoded; repair them as tiktoken does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_checked(text, allowed)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode treating special-token strings as ordinary text (never raises for them)."""
        return self.encode(text, disallowed_special=frozenset())

    def encode_iterable(
        self,
        iterable: Iterable[str],
        *,
        allowed_special: Literal["all"] | Set[str] = frozenset(),
        disallowed_special: Literal["all"] | Set[str] = "all",
    ) -> Iterator[int]:
        """Encode a stream of strings (for example a file opened as text) in bounded memory.

        The ids equal ``encode("".join(iterable))``. Pieces are joined into a buffer; every token
        that ends more than a safety margin (64 characters plus the longest special token)
        before the buffer's end is emitted, and the rest is kept for the next piece. A
        pre-token's boundaries depend only on a few characters after it (contractions,
        whitespace look-ahead), so those tokens cannot change when more text arrives. Memory
        stays bounded unless the input holds one enormous pre-token (a huge run of letters or
        spaces), which is kept whole.
        """
        allowed, disallowed = self._resolve_specials(allowed_special, disallowed_special)
        margin = _STREAM_MARGIN + max((len(s) for s in self._special), default=0)
        cutter = WhitespaceCutter()  # the cuts encode() makes in huge whitespace runs
        buffer = ""
        for index, piece in enumerate(iterable):
            if not isinstance(piece, str):
                raise TypeError(f"piece {index} of the iterable is {type(piece).__name__}, not str")
            for number, part in enumerate(cutter.feed(piece)):
                if number:  # a cut: the buffer is a complete text of its own
                    yield from self._stream_ids(buffer, len(buffer), allowed, disallowed)
                    buffer = ""
                buffer += part
            if len(buffer) <= 2 * margin:
                continue
            cut = yield from self._stream_ids(buffer, len(buffer) - margin, allowed, disallowed)
            buffer = buffer[cut:]
        yield from self._stream_ids(buffer, len(buffer), allowed, disallowed)

    def _stream_ids(
        self, buffer: str, safe_end: int, allowed: frozenset[str], disallowed: frozenset[str]
    ) -> Generator[int, None, int]:
        """Yield the ids of the buffer's segments that end by ``safe_end``; return that end."""
        cut = 0
        for start, end, special_id in self._stream_segments(buffer, allowed, disallowed):
            if end > safe_end:
                break
            yield from (special_id,) if special_id is not None else self._bpe(buffer[start:end])
            cut = end
        return cut

    def _stream_segments(
        self, buffer: str, allowed: frozenset[str], disallowed: frozenset[str]
    ) -> list[tuple[int, int, int | None]]:
        self._check_disallowed(buffer, disallowed)
        try:
            buffer.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                "encode_iterable needs valid text: the stream contains a lone surrogate "
                f"({err.reason}); use encode() on the whole text to have it replaced"
            ) from err
        return list(self._segments(buffer, allowed))

    # --- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of a sequence of ids.

        Raises:
            ValueError: an id is not in the vocabulary (the message names it).
        """
        ids = ids if isinstance(ids, list) else list(ids)
        decoder = self._decoder
        try:
            return b"".join([decoder[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if not self._is_known(i))
            raise ValueError(
                f"unknown token id {bad!r}: ids run from 0 to {self.vocab_size - 1}"
            ) from None

    def _is_known(self, token_id: object) -> bool:
        try:
            return token_id in self._decoder
        except TypeError:  # unhashable
            return False

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to a str; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(list(ids)).decode("utf-8", errors="replace")

    # --- saving and loading -----------------------------------------------------------------

    def _serialized_lines(self, *, name: bool = True, merges: bool = True) -> list[str]:
        lines = [f"{FORMAT_NAME} {FORMAT_VERSION}"]
        if name:
            lines.append(f"name {json.dumps(self.name)}")
        lines += [f"pattern {json.dumps(self.pattern)}", f"tokens {len(self._ranks)}"]
        lines += [f"{i} {t.hex()}" for t, i in sorted(self._ranks.items(), key=lambda kv: kv[1])]
        if merges:
            lines.append(f"merges {len(self.merges)}")
            lines += [f"{a} {b} {c}" for a, b, c in self.merges]
        lines.append(f"specials {len(self._special)}")
        lines += [
            f"{i} {json.dumps(s)}" for s, i in sorted(self._special.items(), key=lambda kv: kv[1])
        ]
        return lines

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer in the versioned text format (see the module docstring), atomically."""
        path = Path(path)
        _atomic_write_text(path, "\n".join(self._serialized_lines()) + "\n")
        return path

    def fingerprint(self) -> str:
        """SHA-256 (hex) of what decides the ids: the pattern, every token's bytes and id, and the
        special tokens, in the canonical text form of :meth:`save`.

        The name and the merge list are left out (they change no id), so a tokenizer saved and
        loaded again, or renamed, keeps its fingerprint; one trained on another corpus does not,
        even with the same vocabulary size. Checkpoints record it to catch a mismatched tokenizer.
        """
        text = "\n".join(self._serialized_lines(name=False, merges=False)) + "\n"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a minillm tokenizer, is corrupt (the message names the
                file and the line), or has a newer format version than this minillm reads.
        """
        path = Path(path)
        reader = _LineReader(path)
        header = reader.fields("header", 2)
        if header[0] != FORMAT_NAME:
            reader.fail(f"not a {FORMAT_NAME} file (first line {reader.last!r})")
        version = reader.integer(header[1], "format version")
        if version > FORMAT_VERSION:
            reader.fail(
                f"format version {version} is newer than this minillm reads "
                f"(up to {FORMAT_VERSION}); upgrade minillm"
            )
        if version < 1:
            reader.fail(f"invalid format version {version}")
        name = reader.json_value("name", str)
        pattern = reader.json_value("pattern", str)
        ranks: dict[bytes, int] = {}
        for fields in reader.section("tokens", 2):
            try:
                token = bytes.fromhex(fields[1])
            except ValueError:
                reader.fail(f"token bytes {fields[1]!r} are not hexadecimal")
            token_id = reader.integer(fields[0], "token id")
            if token in ranks:
                raise ValueError(
                    f"{path}: invalid tokenizer: ids {ranks[token]} and {token_id} share the "
                    f"bytes {fields[1]!r}"
                )
            ranks[token] = token_id
        merges = [
            tuple(reader.integer(f, "merge id") for f in fields)
            for fields in reader.section("merges", 3)
        ]
        specials: dict[str, int] = {}
        for fields in reader.section("specials", 2, split_once=True):
            try:
                text = json.loads(fields[1])
            except json.JSONDecodeError:
                reader.fail(f"special token {fields[1]!r} is not a JSON string")
            if not isinstance(text, str) or text in specials:
                reader.fail(f"special token {fields[1]!r} is not a new JSON string")
            specials[text] = reader.integer(fields[0], "special id")
        reader.expect_end()
        try:
            check_vocabulary(ranks, merges, specials)
            return cls(ranks, pattern, specials, merges, name)
        except ValueError as err:
            raise ValueError(f"{path}: invalid tokenizer: {err}") from err

    # --- GPT-2 and tiktoken -----------------------------------------------------------------

    @classmethod
    def from_gpt2_files(
        cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
    ) -> BPETokenizer:
        """Load OpenAI's GPT-2 tokenizer from its ``encoder.json`` and ``vocab.bpe``.

        GPT-2's files write each byte as a printable character (see ``_bytes_to_unicode``);
        ``vocab.bpe`` lists the merges in order, and merge ``k`` creates id ``256 + k``.

        Raises:
            ValueError: a file is malformed or the two files disagree (the message names it).
        """
        encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
        char_to_byte = {c: b for b, c in _bytes_to_unicode().items()}

        def to_bytes(token: str, source: Path) -> bytes:
            try:
                return bytes(char_to_byte[c] for c in token)
            except KeyError as err:
                raise ValueError(f"{source}: {token!r} is not in GPT-2's byte alphabet") from err

        try:
            encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{encoder_json}: not a valid JSON file: {err}") from err
        if not isinstance(encoder, dict):
            raise ValueError(f"{encoder_json}: expected a JSON object token -> id")
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
        if not lines[0].startswith("#version"):
            raise ValueError(f"{vocab_bpe}: the first line must be '#version: ...'")
        specials = {t: i for t, i in encoder.items() if t.startswith("<|") and t.endswith("|>")}
        ranks = {to_bytes(t, encoder_json): i for t, i in encoder.items() if t not in specials}
        merges: list[tuple[int, int, int]] = []
        for line_no, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{vocab_bpe}: line {line_no}: expected two tokens, got {line!r}")
            left, right = (to_bytes(p, vocab_bpe) for p in parts)
            ids = [ranks.get(left), ranks.get(right), ranks.get(left + right)]
            if None in ids or ids[2] != 256 + len(merges):
                raise ValueError(
                    f"{vocab_bpe}: line {line_no}: merge {line!r} does not match {encoder_json}"
                )
            merges.append((ids[0], ids[1], ids[2]))
        return cls(ranks, GPT2_PATTERN, specials, merges, name="gpt2")

    @classmethod
    def gpt2(cls) -> BPETokenizer:
        """GPT-2's tokenizer from the files bundled in ``minillm/assets/gpt2`` (no network)."""
        return cls.from_gpt2_files(GPT2_DIR / "encoder.json", GPT2_DIR / "vocab.bpe")

    def encode_ordinary_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """Encode many texts at tiktoken's speed, special-token strings as ordinary text.

        The ids equal ``[self.encode_ordinary(t) for t in texts]``: huge whitespace runs are cut
        first, as :meth:`encode` does (tiktoken on its own overflows its stack on such a run).
        """
        texts = list(_texts(texts))
        parts = [split_long_whitespace(text) for text in texts]
        flat = [part for pieces in parts for part in pieces]
        encoded = iter(self._tiktoken().encode_ordinary_batch(flat, num_threads=num_threads))
        return [list(chain.from_iterable(next(encoded) for _ in pieces)) for pieces in parts]

    def _tiktoken(self) -> tiktoken.Encoding:
        if getattr(self, "_tiktoken_encoding", None) is None:
            self._tiktoken_encoding = self.to_tiktoken()
        return self._tiktoken_encoding

    def to_tiktoken(self) -> tiktoken.Encoding:
        """A ``tiktoken.Encoding`` with the same ids, pattern and special tokens (Rust speed).

        It encodes the text as given: a whitespace run of about a million characters overflows
        tiktoken's stack. :meth:`encode_ordinary_batch` cuts such runs first.
        """
        import tiktoken

        return tiktoken.Encoding(
            name=self.name,
            pat_str=self.pattern,
            mergeable_ranks=dict(self._ranks),
            special_tokens=dict(self._special),
        )


# ---------------------------------------------------------------------------------------------
# tiktoken's own GPT-2 encoding, offline
# ---------------------------------------------------------------------------------------------


def _check_gpt2_files(folder: Path) -> None:
    for name, expected in GPT2_SHA256.items():
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != expected:
            raise ValueError(f"{folder / name}: sha256 {actual} differs from GPT-2's {expected}")


def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding built by tiktoken's own loader from the bundled files.

    Equivalent to ``tiktoken.get_encoding("gpt2")`` but needs no network: the files are read
    with ``tiktoken.load.data_gym_to_mergeable_bpe_ranks`` (with its cache switched off, so it
    writes nothing) after checking their sha256 against the hashes tiktoken pins.
    """
    import tiktoken
    import tiktoken.load

    _check_gpt2_files(GPT2_DIR)
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # "" = read the files directly, cache nothing
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(GPT2_DIR / "vocab.bpe"),
            encoder_json_file=str(GPT2_DIR / "encoder.json"),
        )
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
    )


def install_gpt2_tiktoken_cache(cache_dir: str | os.PathLike) -> Path:
    """Copy the bundled GPT-2 files into a tiktoken cache folder, under the names tiktoken uses.

    tiktoken names each cached file by the sha1 of its download URL. After this, running with
    ``TIKTOKEN_CACHE_DIR=<cache_dir>`` makes ``tiktoken.get_encoding("gpt2")`` work offline.

    Returns:
        The cache folder.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _check_gpt2_files(GPT2_DIR)
    for name, url in GPT2_URLS.items():
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(GPT2_DIR / name, tmp)
            os.replace(tmp, target)
    return cache_dir


# ---------------------------------------------------------------------------------------------
# File helpers
# ---------------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _LineReader:
    """Reads a saved tokenizer line by line; every error names the file and the line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a {FORMAT_NAME} file (not UTF-8 text)") from err
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.position = 0
        self.last = ""

    def fail(self, message: str) -> NoReturn:
        raise ValueError(f"{self.path}: line {self.position}: {message}")

    def next_line(self, what: str) -> str:
        if self.position >= len(self.lines):
            self.position += 1
            self.fail(f"file ends early, expected {what} (truncated?)")
        self.last = self.lines[self.position]
        self.position += 1
        return self.last

    def fields(self, what: str, count: int, split_once: bool = False) -> list[str]:
        line = self.next_line(what)
        parts = line.split(" ", 1) if split_once else line.split(" ")
        if len(parts) != count:
            self.fail(f"expected {what} ({count} fields), got {line!r}")
        return parts

    def integer(self, field: str, what: str) -> int:
        try:
            return int(field)
        except ValueError:
            self.fail(f"{what} {field!r} is not an integer")

    def json_value(self, key: str, kind: type):
        fields = self.fields(f"'{key} <json>'", 2, split_once=True)
        if fields[0] != key:
            self.fail(f"expected '{key} ...', got {self.last!r}")
        try:
            value = json.loads(fields[1])
        except json.JSONDecodeError:
            self.fail(f"{key} is not valid JSON: {fields[1]!r}")
        if not isinstance(value, kind):
            self.fail(f"{key} must be a JSON {kind.__name__}")
        return value

    def section(self, key: str, count: int, split_once: bool = False) -> list[list[str]]:
        header = self.fields(f"'{key} <count>'", 2)
        if header[0] != key:
            self.fail(f"expected the '{key} <count>' line, got {self.last!r}")
        n = self.integer(header[1], f"{key} count")
        return [self.fields(f"a {key} entry", count, split_once) for _ in range(n)]

    def expect_end(self) -> None:
        if self.position < len(self.lines):
            self.position += 1
            self.fail(f"unexpected extra content {self.lines[self.position - 1]!r}")
