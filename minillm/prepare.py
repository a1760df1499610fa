"""From raw corpus to training shards: clean splits, a BPE tokenizer, packed token files.

Taught in lesson 05 (pretraining), which chains what lessons 01 (data) and 02 (tokenization)
built: :func:`prepare` loads and cleans the corpus, splits it by document, trains a BPE
tokenizer on the training split only (so validation text stays unseen), encodes every split
with ``<|endoftext|>`` between documents, and packs the ids into ``train.bin``, ``val.bin``
and ``test.bin`` beside ``tokenizer.bpe`` and ``meta.json``. ``minillm prepare`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    encoder = tokenizer.to_tiktoken()
    pieces = []
    for ids in encoder.encode_ordinary_batch(list(texts)):
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

    Returns:
        The contents of ``meta.json``: settings, document and token counts, bytes per token.

    Raises:
        ValueError: the corpus is empty after cleaning, or a split received no document.
    """
    from minillm.data import pack_tokens, prepare_corpus, split_documents
    from minillm.tokenizer import BPETokenizer

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    meta["seconds"] = round(time.perf_counter() - started, 1)
    tmp = out_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / META_FILE)
    say(f"wrote {out_dir} in {meta['seconds']} s")
    return meta


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a prepared folder.

    Raises:
        FileNotFoundError: the folder was not (completely) prepared.
    """
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {data_dir} is not a prepared dataset; run "
            f"`minillm prepare --out-dir {data_dir}`"
        )
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _run_cli(args: argparse.Namespace) -> int:
    prepare(
        args.out_dir,
        corpus=args.corpus,
        vocab_size=args.vocab_size,
        pattern=args.pattern,
        fractions=args.fractions,
        seed=args.seed,
        verbose=True,
    )
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm prepare``."""
    parser = subparsers.add_parser(
        "prepare",
        help="corpus -> cleaned splits -> BPE tokenizer -> token shards",
        description="Load and clean a corpus, split it by document, train a BPE tokenizer on "
        "the training split, and write train.bin, val.bin, test.bin, tokenizer.bpe and "
        "meta.json into OUT_DIR (the input of `minillm train`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out-dir", default="data/course", help="folder to write the shards and tokenizer to"
    )
    parser.add_argument(
        "--corpus",
        default=COURSE_DATA["corpus"],
        help="'shakespeare' (bundled), a folder of .txt files, or a text file",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=COURSE_DATA["vocab_size"],
        help="tokenizer size: 256 bytes + merges + <|endoftext|>",
    )
    parser.add_argument(
        "--pattern",
        default=COURSE_DATA["pattern"],
        choices=["gpt2", "gpt4"],
        help="pre-tokenization regex",
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=COURSE_DATA["fractions"],
        metavar=("TRAIN", "VAL", "TEST"),
        help="shares of the documents in each split",
    )
    parser.add_argument("--seed", type=int, default=COURSE_DATA["seed"], help="split seed")
    parser.set_defaults(handler=_run_cli)
