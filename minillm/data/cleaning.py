"""Cleaning text (lesson 01): Gutenberg boilerplate, Unicode and whitespace normalisation,
quality filters and PII scrubbing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from minillm.data.corpus import UNICODE_FORMS, Document, _check_documents

__all__ = [
    "strip_gutenberg_boilerplate",
    "normalize_whitespace",
    "clean_text",
    "symbol_ratio",
    "quality_problems",
    "quality_filter",
    "PII_PLACEHOLDERS",
    "scrub_pii",
]


_GUTENBERG_START = re.compile(
    r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT!.*$",
    re.IGNORECASE | re.MULTILINE,
)


_GUTENBERG_END = re.compile(
    r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE
)


# Control characters other than tab and newline, the byte-order mark and zero-width spaces.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u200b]")


_OTHER_LINE_BREAKS = "\r\x0b\x0c\x85\u2028\u2029"


_LINE_BREAKS = re.compile(rf"\r\n|[{_OTHER_LINE_BREAKS}]")


_BLANK_RUNS = re.compile(r"\n{3,}")


_LETTERS = re.compile(r"[^\W\d_]+")


def strip_gutenberg_boilerplate(text: str) -> str:
    """Remove a Project Gutenberg licence header and footer, when the standard markers are there.

    Keeps what lies between the last ``*** START OF ... PROJECT GUTENBERG ...`` line and the
    next ``*** END OF ...`` line. Text without markers is returned unchanged.
    """
    if "*" not in text:  # fast path: every marker starts with an asterisk
        return text
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def normalize_whitespace(text: str) -> str:
    """One line-ending convention and no invisible noise.

    Line endings (``\\r\\n``, ``\\r``, form feeds, Unicode line separators) become ``\\n``; control
    characters, byte-order marks and zero-width spaces go; trailing spaces go from every line;
    runs of blank lines shrink to one blank line; leading and trailing blank lines go.
    Indentation is kept (verse and stage directions use it).
    """
    if any(ch in text for ch in _OTHER_LINE_BREAKS):  # fast path for text already using \n
        text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))  # faster than a regex here
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n")


def clean_text(text: str, *, unicode_form: str = "NFC", strip_boilerplate: bool = True) -> str:
    """Normalise one document: Gutenberg boilerplate, Unicode form, whitespace. Idempotent.

    NFC is the default: it merges canonically equivalent spellings of the same character
    (``"e" + U+0301`` and ``"é"``) without changing meaning. NFKC also folds compatibility
    characters (ligatures, full-width letters, superscripts, non-breaking spaces); it helps
    matching but loses distinctions (``"x²"`` becomes ``"x2"``), so it is opt-in.

    Args:
        text: the raw document.
        unicode_form: ``"NFC"``, ``"NFKC"``, ``"NFD"`` or ``"NFKD"``.
        strip_boilerplate: remove a Project Gutenberg header and footer.

    Raises:
        TypeError: ``text`` is not a str.
        ValueError: unknown ``unicode_form``.
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_text expects a str, got {type(text).__name__}")
    if unicode_form not in UNICODE_FORMS:
        raise ValueError(f"unicode_form must be one of {UNICODE_FORMS}, got {unicode_form!r}")
    # Normalise first (NFKC turns e.g. no-break spaces into spaces that the whitespace step must
    # see) and again last (removing a control character can join a letter and a combining mark).
    text = unicodedata.normalize(unicode_form, text)
    if strip_boilerplate:
        text = strip_gutenberg_boilerplate(text)
    text = normalize_whitespace(text)
    return unicodedata.normalize(unicode_form, text)


def symbol_ratio(text: str) -> float:
    """Fraction of the visible (non-whitespace) characters that are not letters; 0.0 when none."""
    visible = "".join(text.split())  # str.split() splits on every Unicode whitespace character
    if not visible:
        return 0.0
    letters = len(visible) - len(_LETTERS.sub("", visible))
    return (len(visible) - letters) / len(visible)


def quality_problems(
    doc: Document, *, min_chars: int = 500, max_symbol_ratio: float = 0.25
) -> list[str]:
    """Reasons why ``doc`` fails the quality filters (empty list: it passes)."""
    problems = []
    if len(doc.text) < min_chars:
        problems.append(f"too short ({len(doc.text)} < {min_chars} characters)")
    ratio = symbol_ratio(doc.text)
    if ratio > max_symbol_ratio:
        problems.append(
            f"too many symbols ({ratio:.2f} > {max_symbol_ratio} of visible characters)"
        )
    return problems


def quality_filter(
    docs: Sequence[Document], *, min_chars: int = 500, max_symbol_ratio: float = 0.25
) -> list[Document]:
    """Keep the documents that are long enough and mostly letters.

    Args:
        docs: the documents.
        min_chars: minimum length in characters (stubs, empty pages, navigation fragments).
        max_symbol_ratio: maximum share of visible characters that are digits or punctuation
            (tables, code, markup, encoding debris). Shakespeare stays between 0.04 and 0.08.

    Raises:
        ValueError: a threshold outside its allowed range.
    """
    if not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"min_chars must be a non-negative int, got {min_chars!r}")
    if not 0.0 <= max_symbol_ratio <= 1.0:
        raise ValueError(f"max_symbol_ratio must be in [0, 1], got {max_symbol_ratio!r}")
    _check_documents(docs)
    return [
        d
        for d in docs
        if not quality_problems(d, min_chars=min_chars, max_symbol_ratio=max_symbol_ratio)
    ]


PII_PLACEHOLDERS = {"url": "<URL>", "email": "<EMAIL>", "phone": "<PHONE>"}


_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)


_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


_PHONE = re.compile(
    r"(?=[+(\d])(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)"
)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


_URL_TRAILING_PUNCTUATION = ".,;:!?)]}'\""


def _replace_url(match: re.Match[str]) -> str:
    url = match.group(0)
    kept = url.rstrip(
        _URL_TRAILING_PUNCTUATION
    )  # "see https://x.org." ends the sentence, not the URL
    return PII_PLACEHOLDERS["url"] + url[len(kept) :]


def _replace_phone(match: re.Match[str]) -> str:
    candidate = match.group(0)
    digits = sum(ch.isdigit() for ch in candidate)
    # Phone numbers have 7 to 15 digits (E.164); dates and short numbers are left alone.
    if not 7 <= digits <= 15 or _ISO_DATE.fullmatch(candidate):
        return candidate
    return PII_PLACEHOLDERS["phone"]


def scrub_pii(text: str) -> str:
    """Replace URLs, e-mail addresses and phone numbers by ``<URL>``, ``<EMAIL>``, ``<PHONE>``.

    Regex-based and deliberately simple: it catches the common formats, and lesson 01 shows what
    it misses. URLs go first (they may contain ``@``), then e-mails, then phone numbers
    (7 to 15 digits in groups, not an ISO date). Idempotent.

    Raises:
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"scrub_pii expects a str, got {type(text).__name__}")
    if "://" in text or "www." in text.lower():  # fast paths: most text has neither
        text = _URL.sub(_replace_url, text)
    if "@" in text:
        text = _EMAIL.sub(PII_PLACEHOLDERS["email"], text)
    return _PHONE.sub(_replace_phone, text)
