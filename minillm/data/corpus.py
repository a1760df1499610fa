"""The corpus (lesson 01): a :class:`Document`, and loading one from the bundled corpus, a folder
of text files or any ``datasets`` dataset.

The rest of lesson 01's pipeline lives beside it: :mod:`minillm.data.cleaning` (boilerplate,
whitespace, Unicode, quality filters, PII), :mod:`minillm.data.deduplication` (exact and MinHash + LSH
near-duplicates), :mod:`minillm.data.pipeline` (:func:`prepare_corpus` runs them all,
:func:`split_documents` splits by document) and :mod:`minillm.data.packing` (token ids to and from
flat files, training batches).

The course corpus, Shakespeare's works from Project Gutenberg, ships inside the package
(``minillm/assets/shakespeare``), so ``load_corpus("shakespeare")`` needs no network.
"""

from __future__ import annotations

import configparser
import functools
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minillm.utils.assets import ASSETS_DIR

ASSETS = ASSETS_DIR
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
            f"{path} is not {encoding} text (byte {err.start} cannot be decoded); convert it "
            f"to {encoding} first (for example `iconv -f latin1 -t utf-8 OLD > NEW`), or from "
            "Python pass encoding=... to load_corpus"
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


# ---------------------------------------------------------------------------------------------
# Quality filters
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# PII scrubbing
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Deduplication: exact (hash) and near (MinHash + LSH)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The course corpus, splits
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Packing tokens on disk, sampling batches
# ---------------------------------------------------------------------------------------------


def _check_documents(docs: Any) -> None:
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise TypeError(f"expected a list of Document, got {type(docs).__name__}")
    for index, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"item {index} is {type(doc).__name__}, expected Document")
