"""Byte-level BPE (lesson 02): :class:`BPETokenizer`, its encoder, special tokens, saving, and
GPT-2 / tiktoken interop.

A token is a byte string; its id is its *rank*. Text is first split into chunks by a regular
expression (pre-tokenization, GPT-2 or GPT-4 style: :mod:`minillm.tokenizer.pretokenize`), then
each chunk's UTF-8 bytes are merged pair by pair, always the pair whose merged bytes have the
lowest rank. That is exactly tiktoken's rule, so :meth:`BPETokenizer.to_tiktoken` gives identical
ids at Rust speed, and GPT-2's own files load with :meth:`BPETokenizer.from_gpt2_files`
(:mod:`minillm.tokenizer.gpt2`). Training (:meth:`BPETokenizer.train`) is in
:mod:`minillm.tokenizer.training`.

Saved files (:meth:`BPETokenizer.save`, format in :mod:`minillm.tokenizer.file_format`) are UTF-8
text, one record per line::

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
import json
import os
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence, Set
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import regex

from minillm.tokenizer.file_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    _atomic_write_text,
    read_tokenizer_file,
)
from minillm.tokenizer.gpt2 import GPT2_DIR, read_gpt2_files
from minillm.tokenizer.guard import (
    HEAP_MERGE_MIN_BYTES,
    WhitespaceCutter,
    check_vocabulary,
    merge_bytes_heap,
    split_long_whitespace,
)
from minillm.tokenizer.pretokenize import (
    ENDOFTEXT,
    GPT2_PATTERN,
    _compile_pattern,
    _special_regex,
    _texts,
)
from minillm.tokenizer.training import _count_chunks, _train_fast, _train_naive

if TYPE_CHECKING:
    import tiktoken


_CACHE_LIMIT = 200_000  # chunk -> ids entries kept by the encoder before the cache is cleared
_STREAM_MARGIN = 64  # characters held back at a buffer's end by encode_iterable (see there)


# ---------------------------------------------------------------------------------------------
# Helpers shared by training and encoding
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


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
        name, pattern, ranks, merges, specials = read_tokenizer_file(path)
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
        ranks, specials, merges = read_gpt2_files(encoder_json, vocab_bpe)
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


# ---------------------------------------------------------------------------------------------
# File helpers
# ---------------------------------------------------------------------------------------------
