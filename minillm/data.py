"""The corpus: loading, cleaning, deduplication, filtering, splitting and packing tokens.

Taught in lesson 01 (data). The pipeline that :func:`prepare_corpus` runs is

    load -> clean (boilerplate, whitespace, Unicode NFC) -> quality filters
         -> exact and near-duplicate removal (MinHash + LSH) -> PII scrubbing

and the result is split by document (:func:`split_documents`). Token ids are written to disk as
flat ``uint16``/``uint32`` files with a JSON sidecar (:func:`pack_tokens`) and read back as a
memory map (:func:`load_tokens`) from which :func:`get_batch` samples training windows.

The course corpus, Shakespeare's works from Project Gutenberg, ships inside the package
(``minillm/assets/shakespeare``), so ``load_corpus("shakespeare")`` needs no network.
"""

from __future__ import annotations

import configparser
import difflib
import functools
import hashlib
import itertools
import json
import os
import re
import tarfile
import tempfile
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_CORPORA: dict[str, Path] = {"shakespeare": ASSETS / "shakespeare" / "shakespeare.tar.xz"}
"""Corpora that ship with the package: name -> compressed archive of .txt files + metadata.txt."""

METADATA_FILE = "metadata.txt"
SPLIT_NAMES = ("train", "val", "test")
TOKENS_FORMAT = "minillm.tokens"
TOKENS_VERSION = 1
UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")


@dataclass(frozen=True)
class Document:
    """One text of a corpus.

    Attributes:
        name: unique identifier within the corpus (for files: the path without ``.txt``).
        text: the content.
        title: human-readable title, when known.
        source: where the text came from (URL, file path or dataset).
    """

    name: str
    text: str
    title: str = ""
    source: str = ""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_corpus(
    name_or_path: Any = "shakespeare",
    *,
    from_hub: bool = False,
    split: str = "train",
    text_field: str = "text",
    pattern: str = "*.txt",
    encoding: str = "utf-8",
) -> list[Document]:
    """Load a corpus as a list of documents.

    Args:
        name_or_path: one of

            - a bundled corpus name (``"shakespeare"``);
            - a folder of text files (every file matching ``pattern``, sorted by path; an INI-style
              ``metadata.txt`` in the folder, as in the bundled corpus, supplies titles and sources);
            - a single text file;
            - a ``datasets.Dataset`` (or ``IterableDataset``) with a string column ``text_field``;
            - a Hugging Face hub dataset name, only with ``from_hub=True``.

        from_hub: load ``name_or_path`` with ``datasets.load_dataset`` (needs the network, or the
            dataset in the local Hugging Face cache). Off by default so nothing downloads by accident.
        split: the split to load from the hub.
        text_field: the column holding the text in a dataset.
        pattern: glob pattern of the files to read in a folder (``"**/*.txt"`` to recurse).
        encoding: the files' text encoding.

    Returns:
        The documents, in a deterministic order.

    Raises:
        TypeError: ``name_or_path`` is of an unsupported type.
        ValueError: unknown name, missing or empty folder, undecodable file, missing text column.
        ConnectionError: ``from_hub=True`` and the hub cannot be reached.
    """
    if from_hub:
        if not isinstance(name_or_path, str):
            raise TypeError(
                f"from_hub=True needs a dataset name (str), got {type(name_or_path).__name__}"
            )
        return _documents_from_dataset(
            _load_from_hub(name_or_path, split), text_field, name_or_path
        )
    if isinstance(name_or_path, str) and name_or_path in BUNDLED_CORPORA:
        return list(_load_bundled(name_or_path))
    if isinstance(name_or_path, (str, os.PathLike)):
        path = Path(name_or_path)
        if path.is_dir():
            return _load_folder(path, pattern, encoding)
        if path.is_file():
            return [_read_document(path, path.parent, encoding, {})]
        raise ValueError(
            f"{str(name_or_path)!r} is neither a bundled corpus ({', '.join(BUNDLED_CORPORA)}) nor an "
            "existing folder or file; pass a folder of .txt files, a datasets.Dataset, or a hub "
            "dataset name with from_hub=True"
        )
    if _is_hf_dataset(name_or_path):
        return _documents_from_dataset(name_or_path, text_field, type(name_or_path).__name__)
    raise TypeError(
        "load_corpus expects a bundled corpus name, a folder or file path, or a datasets.Dataset; "
        f"got {type(name_or_path).__name__}"
    )


@functools.lru_cache(maxsize=4)
def _load_bundled(name: str) -> tuple[Document, ...]:
    """Read a bundled archive (cached: Documents are immutable, callers get a fresh list)."""
    archive = BUNDLED_CORPORA[name]
    if not archive.is_file():
        raise FileNotFoundError(
            f"the bundled corpus {name!r} is missing: {archive} (reinstall minillm)"
        )
    texts: dict[str, str] = {}
    metadata: dict[str, dict[str, str]] = {}
    with tarfile.open(archive, mode="r:xz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            payload = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
            filename = member.name.rsplit("/", 1)[-1]
            if filename == METADATA_FILE:
                metadata = _parse_metadata(payload, f"{archive}:{member.name}")
            elif filename.endswith(".txt"):
                texts[filename[: -len(".txt")]] = payload
    return tuple(
        Document(
            name=doc_name,
            text=texts[doc_name],
            title=metadata.get(doc_name, {}).get("title", ""),
            source=metadata.get(doc_name, {}).get("url", f"{archive.name}:{doc_name}.txt"),
        )
        for doc_name in sorted(texts)
    )


def _parse_metadata(payload: str, where: str) -> dict[str, dict[str, str]]:
    """Parse an INI-style metadata file: ``[name]`` sections with ``title = ...``, ``url = ...``."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(payload, source=where)
    except configparser.Error as err:
        raise ValueError(
            f"{where}: not a valid metadata file ([name] sections of 'key = value' lines): {err}"
        ) from err
    return {section: dict(parser[section]) for section in parser.sections()}


def _load_folder(folder: Path, pattern: str, encoding: str) -> list[Document]:
    metadata_path = folder / METADATA_FILE
    metadata = {}
    if metadata_path.is_file():
        metadata = _parse_metadata(metadata_path.read_text(encoding=encoding), str(metadata_path))
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p != metadata_path)
    if not files:
        raise ValueError(
            f"no files matching {pattern!r} in folder {folder}; allowed: a folder holding text files"
        )
    return [_read_document(path, folder, encoding, metadata) for path in files]


def _read_document(
    path: Path, root: Path, encoding: str, metadata: dict[str, dict[str, str]]
) -> Document:
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not valid {encoding} ({err}); pass encoding=... to load_corpus"
        ) from err
    name = path.relative_to(root).with_suffix("").as_posix()
    info = metadata.get(name, {})
    return Document(
        name=name, text=text, title=info.get("title", ""), source=info.get("url", str(path))
    )


def _is_hf_dataset(obj: Any) -> bool:
    if not type(obj).__module__.startswith("datasets"):
        return False
    import datasets

    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise ValueError(
            f"got a DatasetDict with splits {list(obj.keys())}; pass one split, e.g. dataset['train']"
        )
    return isinstance(obj, (datasets.Dataset, datasets.IterableDataset))


def _load_from_hub(name: str, split: str) -> Any:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is in the course extra
        raise ImportError(
            "loading from the hub needs `datasets`: pip install 'minillm[course]'"
        ) from err
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown name, no such split: all mean "not loadable"
        raise ConnectionError(
            f"could not load {name!r} (split {split!r}) from the Hugging Face hub: {err}. "
            "Without a network, put the texts in a folder and call load_corpus('path/to/folder'), "
            "or load them yourself with datasets.load_dataset('text', data_files=...) and pass "
            "the Dataset to load_corpus"
        ) from err


def _documents_from_dataset(dataset: Any, text_field: str, origin: str) -> list[Document]:
    columns = list(dataset.column_names or [])
    if text_field not in columns:
        raise ValueError(
            f"the dataset has no column {text_field!r}; its columns are {columns}: pass text_field="
        )
    docs = []
    for index, row in enumerate(dataset):
        text = row[text_field]
        if not isinstance(text, str):
            raise TypeError(
                f"row {index} of column {text_field!r} is {type(text).__name__}, expected str"
            )
        name = str(row["name"]) if "name" in row else f"{index:06d}"
        title = str(row.get("title", "") or "")
        docs.append(Document(name=name, text=text, title=title, source=f"{origin}[{index}]"))
    if not docs:
        raise ValueError("the dataset holds no rows; an empty corpus cannot be used")
    return docs


# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Quality filters
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# PII scrubbing
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Deduplication: exact (hash) and near (MinHash + LSH)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# The course corpus, splits
# ---------------------------------------------------------------------------------------------


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


def _check_documents(docs: Any) -> None:
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise TypeError(f"expected a list of Document, got {type(docs).__name__}")
    for index, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"item {index} is {type(doc).__name__}, expected Document")


# ---------------------------------------------------------------------------------------------
# Packing tokens on disk, sampling batches
# ---------------------------------------------------------------------------------------------

_CHUNK_TOKENS = 1 << 20


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab_size <= 65 536), else ``uint32``."""
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if not 1 <= vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _id_chunks(ids: Any) -> Iterable[np.ndarray]:
    """``ids`` as int64 arrays, in chunks (streams from an iterator in bounded memory)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"ids must be one-dimensional, got shape {ids.shape}")
        for start in range(0, len(ids), _CHUNK_TOKENS):
            yield ids[start : start + _CHUNK_TOKENS]
        return
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a sequence or iterable of ints, got {type(ids).__name__}")
    iterator = iter(ids)
    while chunk := list(itertools.islice(iterator, _CHUNK_TOKENS)):
        yield np.asarray(chunk)


def pack_tokens(
    ids: Any, path: str | os.PathLike, vocab_size: int, *, metadata: dict | None = None
) -> Path:
    """Write token ids as a flat binary file plus a JSON sidecar, atomically.

    ``path`` (ending in ``.bin``) receives the raw ids, little-endian ``uint16`` (``uint32`` when
    ``vocab_size > 65536``); ``path.with_suffix(".json")`` records format, version, dtype,
    vocab_size, num_tokens and ``metadata``. Both go through a temporary file and ``os.replace``;
    the sidecar is written last, so its presence means the pair is complete.

    Args:
        ids: a 1-D array, tensor, list, or any iterable of ints (streamed in 1M-token chunks).
        path: the ``.bin`` file to write.
        vocab_size: every id must be in ``[0, vocab_size)``.
        metadata: extra JSON-serialisable information for the sidecar (tokenizer, corpus...).

    Returns:
        The path of the ``.bin`` file.

    Raises:
        ValueError: no ids, an id outside ``[0, vocab_size)``, or a path not ending in ``.bin``.
        TypeError: non-integer ids.
    """
    dtype = token_dtype(vocab_size)
    bin_path = Path(path)
    if bin_path.suffix != ".bin":
        raise ValueError(
            f"path must end in .bin (the sidecar is the same name with .json), got {bin_path}"
        )
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tempfile.NamedTemporaryFile(
        dir=bin_path.parent, prefix=f".{bin_path.name}.", delete=False
    ) as tmp:
        try:
            for chunk in _id_chunks(ids):
                _check_ids(chunk, vocab_size, offset=count)
                tmp.write(chunk.astype(dtype.newbyteorder("<"), copy=False).tobytes())
                count += len(chunk)
            if count == 0:
                raise ValueError("ids is empty; there is nothing to pack")
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, bin_path)
    sidecar = {
        "format": TOKENS_FORMAT,
        "version": TOKENS_VERSION,
        "dtype": dtype.name,
        "byteorder": "little",
        "vocab_size": int(vocab_size),
        "num_tokens": count,
        "metadata": metadata or {},
    }
    _write_text_atomic(bin_path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return bin_path


def _check_ids(chunk: np.ndarray, vocab_size: int, offset: int) -> None:
    if chunk.size and chunk.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {chunk.dtype}")
    if chunk.size == 0:
        return
    bad = np.flatnonzero((chunk < 0) | (chunk >= vocab_size))
    if bad.size:
        where = int(bad[0])
        raise ValueError(
            f"id {int(chunk[where])} at position {offset + where} is outside [0, {vocab_size}) "
            "(vocab_size); every id must be a valid token of the vocabulary"
        )


def _write_text_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def read_token_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a token file written by :func:`pack_tokens` (``.bin`` or ``.json`` path)."""
    json_path = Path(path).with_suffix(".json")
    if not json_path.is_file():
        raise FileNotFoundError(
            f"no sidecar {json_path} next to the token file; write it with pack_tokens"
        )
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != TOKENS_FORMAT:
        raise ValueError(f"{json_path} is not a {TOKENS_FORMAT} sidecar")
    if meta.get("version") != TOKENS_VERSION:
        raise ValueError(
            f"{json_path} has format version {meta.get('version')!r}; this minillm reads version "
            f"{TOKENS_VERSION} (upgrade minillm or re-pack the tokens)"
        )
    if meta.get("dtype") not in ("uint16", "uint32"):
        raise ValueError(f"{json_path}: dtype must be uint16 or uint32, got {meta.get('dtype')!r}")
    return meta


def load_tokens(path: str | os.PathLike) -> np.memmap:
    """Memory-map a token file written by :func:`pack_tokens` (read-only; nothing is read yet).

    Raises:
        FileNotFoundError: the ``.bin`` or its ``.json`` sidecar is missing.
        ValueError: the sidecar is invalid or disagrees with the file size.
    """
    bin_path = Path(path).with_suffix(".bin")
    if not bin_path.is_file():
        raise FileNotFoundError(f"no token file {bin_path}")
    meta = read_token_sidecar(bin_path)
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    expected = int(meta["num_tokens"]) * dtype.itemsize
    actual = bin_path.stat().st_size
    if actual != expected or expected == 0:
        raise ValueError(
            f"{bin_path} holds {actual} bytes but its sidecar promises {meta['num_tokens']} "
            f"{meta['dtype']} tokens ({expected} bytes); the file is truncated or corrupt, re-pack it"
        )
    return np.memmap(bin_path, dtype=dtype, mode="r", shape=(int(meta["num_tokens"]),))


def get_batch(
    tokens: np.ndarray | torch.Tensor,
    batch_size: int,
    block_size: int,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows of ``block_size + 1`` tokens: inputs and next-token targets.

    Only the sampled windows are read, so ``tokens`` can be a memory map far larger than RAM.

    Args:
        tokens: 1-D ids (``np.memmap`` from :func:`load_tokens`, any ndarray, or a tensor).
        batch_size: number of windows.
        block_size: tokens per window (the model's context length).
        generator: a seeded ``torch.Generator`` for reproducible batches.
        device: where to put the tensors (pinned memory and a non-blocking copy on CUDA).

    Returns:
        ``x, y``: int64 tensors of shape ``(batch_size, block_size)``; ``y[:, t] == x[:, t+1]``,
        and ``y[:, -1]`` is the token after the window.

    Raises:
        TypeError: ``tokens`` is not an array or tensor.
        ValueError: non-positive sizes, ``tokens`` not 1-D, or ``block_size >= len(tokens)``.
    """
    if not isinstance(tokens, (np.ndarray, torch.Tensor)):
        raise TypeError(
            f"tokens must be a numpy array, memmap or torch tensor, got {type(tokens).__name__}"
        )
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {tuple(tokens.shape)}")
    for label, value in (("batch_size", batch_size), ("block_size", block_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    n_tokens = len(tokens)
    if block_size >= n_tokens:
        raise ValueError(
            f"block_size ({block_size}) must be smaller than the number of tokens ({n_tokens}): "
            f"a window needs block_size + 1 tokens"
        )
    starts = torch.randint(n_tokens - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size + 1)  # (T+1,)
    index = (starts[:, None] + offsets[None, :]).numpy()  # (B, T+1)
    if isinstance(tokens, torch.Tensor):
        windows = tokens.detach().cpu()[torch.from_numpy(index)].to(torch.int64)
    else:
        windows = torch.from_numpy(tokens[index].astype(np.int64))  # reads only these B·(T+1) ids
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T) each
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda":
            x, y = (
                x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True),
            )
        else:
            x, y = x.to(device), y.to(device)
    return x, y
