"""Pre-tokenization (lesson 02): the GPT-2 and GPT-4 regexes that split text into chunks before
BPE, and the regex that finds special tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import regex

from minillm.tokenizer.guard import (
    check_pattern_covers,
)

if TYPE_CHECKING:
    pass

__all__ = ["GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "ENDOFTEXT"]


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
