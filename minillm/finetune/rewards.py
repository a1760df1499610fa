r"""Verifiable rewards for lesson 14: a line of ten syllables, counted with a pronouncing
dictionary.

The task: given a few lines of a speech from a play, write the next line, and make it a line of
blank verse's length, ten syllables. A program checks the answer with the Carnegie Mellon
Pronouncing Dictionary (the ``pronouncing`` package, which ships the dictionary as data: no
network). The reward is graded so that a nearly right line earns something:

.. math::

    r = \max\bigl(0,\; 1 - |n - 10| / 5\bigr)

where :math:`n` is the line's syllable count, and :math:`r = 0` when the completion did not end
its line.

Two versions show reward hacking. :func:`naive_syllable_reward` counts syllables of *any* text,
guessing unknown words by their vowel groups: "the the the the the the the the the the" scores
1, and so does made-up noise with the right number of vowels. :func:`verse_reward` closes both
holes: every word must be an English word the dictionary knows (or an elided form of one, such as
*kill'd*), and no word may make up more than a quarter of the line's words (at most two uses).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

from minillm.finetune.instructions import EVAL_PLAYS, parse_speeches

__all__ = [
    "TARGET_SYLLABLES",
    "completion_line",
    "dictionary_syllables",
    "guessed_syllables",
    "line_words",
    "naive_syllable_reward",
    "syllable_score",
    "verse_prompts",
    "verse_reward",
]

TARGET_SYLLABLES = 10
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*'?|'[a-z]+")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
# Elisions of the plays: the apostrophe marks a vowel that is not spoken.
_ELIDED_SUFFIXES = ("'d", "'st", "'s", "'n", "'t", "'ll", "'r")


def _dictionary() -> Callable[[str], list[str]]:
    try:
        import pronouncing
    except ImportError as error:  # optional: only the lesson-14 rewards need it
        raise ImportError(
            "the lesson-14 rewards need the CMU Pronouncing Dictionary: pip install pronouncing "
            "(it is in minillm[course] and minillm[dev])"
        ) from error
    return pronouncing.phones_for_word


def _count(phones: str) -> int:
    return sum(ch.isdigit() for ch in phones)  # one stress digit per vowel phone


@lru_cache(maxsize=65536)
def dictionary_syllables(word: str) -> int | None:
    """Syllables of ``word`` (lower case) by the CMU dictionary, or None when it is not a word.

    The first pronunciation counts. Forms the dictionary lacks are tried without a leading
    apostrophe (*'tis*) and as a stem plus a silent elision (*kill'd* = *kill*, *know'st* =
    *know*).
    """
    lookup = _dictionary()
    word = word.lower().strip()
    if not word:
        return None
    for candidate in (word, word.strip("'")):
        phones = lookup(candidate)
        if phones:
            return _count(phones[0])
    bare = word.strip("'")
    for suffix in _ELIDED_SUFFIXES:
        if bare.endswith(suffix) and len(bare) > len(suffix):
            phones = lookup(bare[: -len(suffix)])
            if phones:
                return _count(phones[0])
    return None


def guessed_syllables(word: str) -> int:
    """Vowel groups of ``word`` (at least 1): the naive count any text gets."""
    return max(1, len(_VOWEL_GROUPS.findall(word.lower())))


def line_words(line: str) -> list[str]:
    """The words of a line, lower case, apostrophes kept (*o'er*, *kill'd*, *'tis*)."""
    return _WORD.findall(line.lower())


def completion_line(text: str) -> str | None:
    """The line a completion wrote: its text before the first newline, None if it never ended."""
    if "\n" not in text:
        return None
    return text.split("\n", 1)[0]


def syllable_score(n: int, target: int = TARGET_SYLLABLES, width: float = 5.0) -> float:
    """:math:`\\max(0, 1 - |n - target| / width)`: 1 on target, 0 from ``width`` away."""
    return max(0.0, 1.0 - abs(n - target) / width)


def naive_syllable_reward(text: str, target: int = TARGET_SYLLABLES) -> float:
    """The hackable reward: any words count, unknown ones by vowel groups, repeats allowed."""
    line = completion_line(text)
    if line is None:
        return 0.0
    words = line_words(line)
    if not words:
        return 0.0
    n = sum(dictionary_syllables(w) or guessed_syllables(w) for w in words)
    return syllable_score(n, target)


def verse_reward(text: str, target: int = TARGET_SYLLABLES, max_share: float = 0.25) -> float:
    """The reward of lesson 14: :func:`syllable_score` of a finished line of real, varied words.

    0 when the completion did not end its line, when a word is not in the dictionary (nor an
    elision of one), or when one word is more than ``max_share`` of the words (and used more
    than twice): the two hacks :func:`naive_syllable_reward` allows.
    """
    line = completion_line(text)
    if line is None:
        return 0.0
    words = line_words(line)
    if not words:
        return 0.0
    counts = [dictionary_syllables(w) for w in words]
    if any(c is None for c in counts):
        return 0.0
    most = Counter(words).most_common(1)[0][1]
    if most > 2 and most > max_share * len(words):
        return 0.0
    return syllable_score(sum(counts), target)


def verse_prompts(
    docs: Sequence,
    per_play: int = 20,
    eval_plays: Sequence[str] = EVAL_PLAYS,
    context_lines: int = 2,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Prompts of the task, split by play: ``{"train": [...], "eval": [...]}``.

    Each prompt is a speaker's name line and the first ``context_lines`` lines of one of their
    speeches (one with at least one more line), ending in a newline; the model writes the next
    line. Prompts of ``eval_plays`` go to ``eval`` only, so evaluation never sees a training play.
    """
    if isinstance(per_play, bool) or not isinstance(per_play, int) or per_play < 1:
        raise ValueError(f"per_play must be a positive int, got {per_play!r}")
    if isinstance(context_lines, bool) or not isinstance(context_lines, int) or context_lines < 1:
        raise ValueError(f"context_lines must be a positive int, got {context_lines!r}")
    rng = random.Random(seed)
    out: dict[str, list[str]] = {"train": [], "eval": []}
    for doc in sorted(docs, key=lambda d: d.title):
        speeches = [s for s in parse_speeches(doc.text) if len(s.lines) > context_lines]
        picked = rng.sample(speeches, min(per_play, len(speeches)))
        split = "eval" if doc.title in eval_plays else "train"
        for speech in picked:
            out[split].append(
                f"{speech.speaker}.\n" + "\n".join(speech.lines[:context_lines]) + "\n"
            )
    return out
