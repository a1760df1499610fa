"""From raw corpus to training shards: clean splits, a BPE tokenizer, packed token files.

Taught in lesson 05 (pretraining), which chains what lessons 01 (data) and 02 (tokenization)
built: :func:`prepare` loads and cleans the corpus, splits it by document, trains a BPE
tokenizer on the training split only (so validation text stays unseen), encodes every split
with ``<|endoftext|>`` between documents, and packs the ids into ``train.bin``, ``val.bin``
and ``test.bin`` beside ``tokenizer.bpe`` and ``meta.json``. ``minillm prepare`` runs it.

The folder is published atomically: everything is written into a hidden sibling, then renamed
into place, so it is complete or absent (a crash leaves no half-written folder that ``train``
could read). ``meta.json`` is the completion marker and records the size and SHA-256 of every
file; :func:`verify_data_dir` checks a folder against it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minillm.data.packing import pack_tokens, read_token_sidecar
from minillm.data.pipeline import prepare_corpus, split_documents
from minillm.tokenizer.bpe import BPETokenizer
from minillm.utils.environment import check_seed, ensure_writable_dir
from minillm.utils.safefile import sha256_file as file_sha256

TOKENIZER_FILE = "tokenizer.bpe"
META_FILE = "meta.json"
SPLITS = ("train", "val", "test")

COURSE_DATA: dict[str, Any] = {
    "corpus": "shakespeare",
    "vocab_size": 4096,
    "pattern": "gpt4",
    "fractions": [0.9, 0.05, 0.05],
    "seed": 0,
}
"""The course default for :func:`prepare` (lesson 05 and :func:`minillm.course_model`)."""


def encode_documents(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Encode documents into one id stream with ``<|endoftext|>`` after each one.

    The separator tells the model where one text ends and an unrelated one begins, so it
    learns not to carry context across the boundary. Encoding runs through tiktoken (the
    same ids, at Rust speed).
    """
    eot = tokenizer.eot_id
    pieces = []
    # tiktoken's speed, with huge whitespace runs cut first (alone, tiktoken overflows its stack)
    for ids in tokenizer.encode_ordinary_batch(list(texts)):
        pieces.append(np.asarray(ids, dtype=np.int64))
        pieces.append(np.array([eot], dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def prepare(
    out_dir: str | Path,
    *,
    corpus: str = COURSE_DATA["corpus"],
    vocab_size: int = COURSE_DATA["vocab_size"],
    pattern: str = COURSE_DATA["pattern"],
    fractions: Sequence[float] = tuple(COURSE_DATA["fractions"]),
    seed: int = COURSE_DATA["seed"],
    verbose: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Corpus → cleaned document splits → BPE tokenizer → token shards in ``out_dir``.

    Args:
        out_dir: folder to write ``train.bin``, ``val.bin``, ``test.bin`` (each with its
            ``.json`` sidecar), ``tokenizer.bpe`` and ``meta.json`` (written last: its presence
            means the folder is complete).
        corpus: a name or path accepted by :func:`minillm.data.prepare_corpus`.
        vocab_size: the tokenizer's size, ``<|endoftext|>`` included.
        pattern: the pre-tokenization regex, "gpt2" or "gpt4".
        fractions: train/val/test shares of the documents.
        seed: the split's shuffle seed.
        verbose: print what each stage produced.
        overwrite: replace a folder that already holds files (otherwise refused, so a run
            folder's tokenizer is never replaced by accident).

    Returns:
        The contents of ``meta.json``: settings, document and token counts, bytes per token.

    Raises:
        FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
        ValueError: bad settings, an unwritable ``out_dir``, an empty corpus after cleaning,
            or a split that received no document.
    """

    _check_settings(vocab_size, fractions)
    check_seed(seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a folder; choose another path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds files; pass --overwrite (overwrite=True) to replace them, "
            "or choose an empty folder"
        )
    ensure_writable_dir(out_dir.parent, "the folder that holds out_dir")
    work = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        meta = _prepare_into(work, corpus, vocab_size, pattern, fractions, seed, verbose)
        _publish(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if verbose:
        # The folder's name only: a full path would leak the machine into stored lesson outputs.
        print(f"wrote {out_dir.name}/ in {meta['seconds']} s")
    return meta


def _check_settings(vocab_size: Any, fractions: Sequence[float]) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 257:
        raise ValueError(f"vocab_size must be an int >= 257, got {vocab_size!r}")
    values = list(fractions)
    if len(values) != 3 or not all(
        isinstance(f, int | float) and math.isfinite(f) and f >= 0 for f in values
    ):
        raise ValueError(f"fractions must be three finite numbers >= 0, got {values!r}")


def _publish(work: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an old folder is moved aside first, then deleted."""
    old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        os.replace(out_dir, old)
    elif out_dir.is_dir():
        out_dir.rmdir()
    os.replace(work, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _prepare_into(
    out_dir: Path,
    corpus: str,
    vocab_size: int,
    pattern: str,
    fractions: Sequence[float],
    seed: int,
    verbose: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)

    docs = prepare_corpus(corpus)
    if not docs:
        raise ValueError(f"corpus {corpus!r} holds no documents after cleaning")
    splits = split_documents(docs, fractions=tuple(fractions), seed=seed)
    empty = [name for name in SPLITS if not splits.get(name)]
    if empty:
        raise ValueError(
            f"split(s) {empty} received no document from {len(docs)} documents; "
            "use a larger corpus or larger fractions for them"
        )
    say(
        f"corpus {corpus!r}: {len(docs)} documents -> "
        + ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
    )

    train_texts = [d.text for d in splits["train"]]
    tokenizer = BPETokenizer.train(train_texts, vocab_size, pattern=pattern, name=f"{corpus}-bpe")
    tokenizer.save(out_dir / TOKENIZER_FILE)
    say(f"tokenizer: {tokenizer.vocab_size} ids trained on the train split")

    meta: dict[str, Any] = {
        "corpus": corpus,
        "vocab_size": tokenizer.vocab_size,
        "pattern": pattern,
        "fractions": list(fractions),
        "seed": seed,
        "eot_id": tokenizer.eot_id,
        "splits": {},
    }
    for name in SPLITS:
        texts = [d.text for d in splits[name]]
        ids = encode_documents(tokenizer, texts)
        pack_tokens(ids, out_dir / f"{name}.bin", tokenizer.vocab_size)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        meta["splits"][name] = {
            "documents": len(texts),
            "tokens": int(len(ids)),
            "bytes": n_bytes,
            "bytes_per_token": n_bytes / max(1, len(ids)),
        }
        say(
            f"{name:>5}: {len(texts):3d} documents, {len(ids):,} tokens, "
            f"{n_bytes / max(1, len(ids)):.2f} bytes/token"
        )
    meta["tokenizer_fingerprint"] = tokenizer.fingerprint()
    meta["files"] = {
        f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(out_dir.iterdir())
        if f.is_file()
    }
    meta["seconds"] = round(time.perf_counter() - started, 1)
    tmp = out_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / META_FILE)
    return meta


def verify_data_dir(data_dir: str | Path, *, deep: bool = False):
    """Check that a prepared folder is complete and intact; return its tokenizer.

    Checks that ``meta.json`` (the completion marker) exists and parses, that every file it
    lists has its recorded size (``deep=True``: also its SHA-256), that each split's token
    count matches, and that the tokenizer loads (with its own consistency checks) and has the
    recorded fingerprint. Folders from older minillm versions, whose ``meta.json`` lists no
    files, get the checks their record allows.

    Returns:
        The folder's :class:`~minillm.tokenizer.BPETokenizer` (None if the folder has none).

    Raises:
        FileNotFoundError: the folder or its ``meta.json`` is missing (not prepared, or a
            preparation was interrupted), or a listed file is missing.
        ValueError: a file's size, checksum or token count differs from the record.
    """

    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    for name, record in (meta.get("files") or {}).items():
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; re-run `minillm prepare --overwrite`")
        if path.stat().st_size != record.get("bytes"):
            raise ValueError(
                f"{path} has {path.stat().st_size} bytes, {record.get('bytes')} when prepared "
                "(truncated or replaced); re-run `minillm prepare --overwrite`"
            )
        if deep and file_sha256(path) != record.get("sha256"):
            raise ValueError(
                f"{path} differs from what was prepared (its SHA-256 is not the one meta.json "
                "records); re-run `minillm prepare --overwrite`"
            )
    for name, split in (meta.get("splits") or {}).items():
        bin_path = data_dir / f"{name}.bin"
        if bin_path.is_file():
            stored = read_token_sidecar(bin_path).get("num_tokens", split.get("tokens"))
            if stored != split.get("tokens"):
                raise ValueError(
                    f"{bin_path} holds {stored} tokens, meta.json says {split.get('tokens')}; "
                    "re-run `minillm prepare --overwrite`"
                )
    tokenizer_path = data_dir / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        return None
    tokenizer = BPETokenizer.load(tokenizer_path)
    recorded = meta.get("tokenizer_fingerprint")
    if recorded is not None and recorded != tokenizer.fingerprint():
        raise ValueError(
            f"{tokenizer_path} is not the tokenizer this folder was prepared with "
            "(fingerprint differs); re-run `minillm prepare --overwrite`"
        )
    return tokenizer


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a prepared folder.

    Raises:
        FileNotFoundError: the folder was not (completely) prepared.
    """
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {data_dir} is not a (completely) prepared dataset; run "
            f"`minillm prepare --out-dir {data_dir}` (it writes train.bin, val.bin, test.bin, "
            "tokenizer.bpe and, last, meta.json)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run `minillm prepare`") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object; re-run `minillm prepare`")
    return meta
