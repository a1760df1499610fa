"""Guards for :mod:`minillm.tokenizer` against hostile text and corrupt files (issue 17).

Three jobs, each with a cost or a correctness bound:

* **Long whitespace runs are cut before any encoder sees them.** tiktoken's regex engine
  overflows its stack on a run of about a million spaces, and a pre-token as long as the run
  costs the merge loop quadratic time. :func:`split_long_whitespace` cuts every run of more than
  :data:`MAX_WHITESPACE_RUN` whitespace characters after each ``MAX_WHITESPACE_RUN``-th one;
  the pure-Python encoder and the tiktoken-backed batch encoder both encode the pieces
  separately, so they keep giving identical ids. Text without such a run is one piece, so its ids
  are exactly tiktoken's. :class:`WhitespaceCutter` finds the same cuts in a stream.
* **Merging a long pre-token is O(n log n)**, not O(n²): :func:`merge_bytes_heap` keeps the
  candidate pairs in a heap (same rule as the scan: lowest rank first, leftmost on ties).
* **A tokenizer file is checked for internal consistency** before use
  (:func:`check_vocabulary`), and a pre-tokenization pattern must reproduce a probe text
  exactly (:func:`check_pattern_covers`): a pattern that skips characters would silently drop
  them from every encoded text.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import regex

MAX_WHITESPACE_RUN = 1024
"""Whitespace runs longer than this are cut into pieces of this many characters before encoding."""

# Every character for which str.isspace() is true (a superset of Unicode White_Space, which is
# what tiktoken's \s means), so a run that tiktoken sees as whitespace is always found here.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_WS_CLASS = "[" + regex.escape(WHITESPACE) + "]"
# A run longer than the limit, matched only from its first character (the look-behind keeps
# the search linear: a failed attempt inside a run is refused at once).
_LONG_RUN = regex.compile(f"(?<!{_WS_CLASS}){_WS_CLASS}{{{MAX_WHITESPACE_RUN + 1},}}+")

PATTERN_PROBE = (
    "hello, world! It's 12,345 caf\u00e9s; \u6771\u4eac\t\u00bfqu\u00e9?\n  (ok)\r\n.\U0001f642"
)
"""Text every pre-tokenization pattern must reproduce exactly when its matches are joined."""

HEAP_MERGE_MIN_BYTES = 48
"""Pre-tokens at least this long are merged with the heap (shorter ones: the plain scan)."""


def _cuts_in_run(start: int, end: int, already: int, limit: int) -> list[int]:
    """Cut offsets inside the whitespace run ``text[start:end]`` that continues ``already``
    characters of the same run seen before ``start``: before every ``limit``-th character."""
    first = max(limit, -(-already // limit) * limit)  # the next multiple of limit, >= already
    return list(range(start + first - already, end, limit))


def whitespace_cuts(text: str, already: int = 0, limit: int = MAX_WHITESPACE_RUN) -> list[int]:
    """Offsets where :func:`split_long_whitespace` cuts ``text``.

    Args:
        text: the text (or one piece of a stream).
        already: how many whitespace characters immediately precede ``text`` in the same run
            (0 for a whole text); a stream passes what the previous piece ended with.
        limit: the longest run left whole.
    """
    cuts: list[int] = []
    lead = len(text) - len(text.lstrip(WHITESPACE))
    if already and lead:
        cuts += _cuts_in_run(0, lead, already, limit)
    elif lead > limit:
        cuts += _cuts_in_run(0, lead, 0, limit)
    pattern = (
        _LONG_RUN
        if limit == MAX_WHITESPACE_RUN
        else regex.compile(f"(?<!{_WS_CLASS}){_WS_CLASS}{{{limit + 1},}}+")
    )
    for match in pattern.finditer(text, max(lead, 1)):
        cuts += _cuts_in_run(match.start(), match.end(), 0, limit)
    return cuts


def split_long_whitespace(text: str, limit: int = MAX_WHITESPACE_RUN) -> list[str]:
    """Cut every whitespace run longer than ``limit`` after each ``limit``-th character.

    Returns:
        The pieces, in order; ``[text]`` when no run is that long (the common case, found with
        one regex search).
    """
    if len(text) <= limit or (limit == MAX_WHITESPACE_RUN and not _LONG_RUN.search(text)):
        return [text]
    cuts = whitespace_cuts(text, 0, limit)
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class WhitespaceCutter:
    """The cuts of :func:`split_long_whitespace`, found in a stream of pieces.

    ``feed(piece)`` returns the piece's parts; a cut lies between consecutive parts (a
    ``[piece]`` result means no cut). The state is the length of the whitespace run the stream
    ends with, so the cuts equal those of the joined text.
    """

    def __init__(self, limit: int = MAX_WHITESPACE_RUN) -> None:
        self.limit = limit
        self.run = 0

    def feed(self, piece: str) -> list[str]:
        if not piece:
            return [piece]
        cuts = whitespace_cuts(piece, self.run, self.limit)
        trailing = len(piece) - len(piece.rstrip(WHITESPACE))
        self.run = self.run + trailing if trailing == len(piece) else trailing
        bounds = [0, *cuts, len(piece)]
        return [piece[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def merge_bytes_heap(data: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """BPE-merge ``data`` in O(n log n): always the adjacent pair whose merged bytes rank lowest,
    the leftmost on ties (the rule of the plain scan and of tiktoken).

    Parts form a linked list indexed by their start offset; the heap holds ``(rank, start)`` of
    candidate pairs. An entry is stale when its left part was merged away or its pair changed;
    then the pair's current rank differs (ranks are distinct per byte string) and it is skipped.
    """
    n = len(data)
    nxt = list(range(1, n + 1))  # start of the next part (n: none)
    prv = list(range(-1, n - 1))
    alive = [True] * n

    def pair_rank(start: int) -> int | None:
        middle = nxt[start]
        if middle >= n:
            return None
        return ranks.get(data[start : nxt[middle]])

    heap = [(r, i) for i in range(n - 1) if (r := pair_rank(i)) is not None]
    heapq.heapify(heap)
    while heap:
        rank, start = heapq.heappop(heap)
        if not alive[start] or pair_rank(start) != rank:
            continue
        middle = nxt[start]
        alive[middle] = False
        nxt[start] = nxt[middle]
        if nxt[start] < n:
            prv[nxt[start]] = start
        for candidate in (prv[start], start):
            if candidate >= 0 and (r := pair_rank(candidate)) is not None:
                heapq.heappush(heap, (r, candidate))
    parts, start = [], 0
    while start < n:
        parts.append(data[start : nxt[start]])
        start = nxt[start]
    return parts


# ---------------------------------------------------------------------------------------------
# Consistency of a tokenizer's pattern and vocabulary
# ---------------------------------------------------------------------------------------------


def check_pattern_covers(compiled: regex.Pattern, source: str) -> None:
    """Refuse a pre-tokenization pattern whose matches do not reproduce :data:`PATTERN_PROBE`.

    Raises:
        ValueError: characters of the probe fall between matches (they would be dropped from
            every encoded text); the message shows what the pattern keeps.
    """
    kept = "".join(compiled.findall(PATTERN_PROBE))
    if kept != PATTERN_PROBE:
        raise ValueError(
            f"pattern {source!r} does not cover all text: its matches turn {PATTERN_PROBE!r} into "
            f"{kept!r}, so characters would be dropped; use a pattern whose matches tile any "
            "text (the GPT-2 and GPT-4 patterns end with '|\\s' for that), e.g. 'gpt2' or 'gpt4'"
        )


def _token_bytes_by_id(ranks: dict[bytes, int]) -> list[bytes]:
    n = len(ranks)
    ids = sorted(ranks.values())
    if ids != list(range(n)):
        gap = next(i for i, value in enumerate(ids) if value != i)
        raise ValueError(f"token ids must run 0..{n - 1} without gaps; id {gap} is missing")
    by_id = [b""] * n
    for token, i in ranks.items():
        by_id[i] = token
    singles = [i for i, token in enumerate(by_id) if len(token) == 1]
    if len(singles) != 256 or max(singles) != 255:
        raise ValueError("the 256 single-byte tokens must hold ids 0..255")
    return by_id


def check_vocabulary(
    ranks: dict[bytes, int],
    merges: Iterable[tuple[int, int, int]],
    specials: dict[str, int],
) -> None:
    """Check that a vocabulary, its merges and its special tokens fit together.

    Rules: ordinary ids run ``0..n-1`` (single bytes ``0..255``); each merge ``(a, b, c)`` joins
    two tokens that exist before it (bytes, or made by an earlier merge) into token ``c`` whose
    bytes are ``a``'s then ``b``'s; the tokens the merges make for the first time get ids 256,
    257, ... in merge order (an id is a merge's rank, so swapped ranks are caught); every token
    longer than one byte is made by a merge; special ids follow the vocabulary: ``n, n+1, ...``.

    Raises:
        ValueError: the first rule broken, with the offending merge or id.
    """
    by_id = _token_bytes_by_id(ranks)
    n = len(by_id)
    made = [i < 256 for i in range(n)]
    next_new = 256
    for index, merge in enumerate(merges):
        a, b, c = merge
        where = f"merge {index} ({a} {b} {c})"
        if not all(0 <= i < n for i in merge):
            raise ValueError(f"{where} names an id outside the vocabulary 0..{n - 1}")
        if not (made[a] and made[b]):
            missing = a if not made[a] else b
            raise ValueError(f"{where} uses token {missing} before a merge has made it")
        if by_id[a] + by_id[b] != by_id[c]:
            raise ValueError(
                f"{where}: token {c}'s bytes {by_id[c]!r} are not {by_id[a]!r} + {by_id[b]!r}"
            )
        if not made[c]:
            if c != next_new:
                raise ValueError(
                    f"{where} makes token {c} first but the next new id is {next_new} "
                    "(ids out of merge order: swapped or edited ranks?)"
                )
            made[c] = True
            next_new += 1
    if next_new != n:
        raise ValueError(
            f"token {next_new} ({by_id[next_new]!r}) is not made by any merge; "
            "a file needs the merges of every token longer than one byte"
        )
    special_ids = sorted(specials.values())
    if special_ids != list(range(n, n + len(special_ids))):
        raise ValueError(
            f"special token ids {special_ids} must follow the vocabulary: "
            f"{list(range(n, n + len(special_ids)))}"
        )
