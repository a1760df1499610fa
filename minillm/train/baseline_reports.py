"""The baseline report (lesson 05): unigram, bigram and compressor bits per byte of a prepared
data folder, written once and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minillm.data.splits import load_split
from minillm.tokenizer.bpe import BPETokenizer
from minillm.train.baselines import (
    DEFAULT_BIGRAM_ALPHA,
    DEFAULT_UNIGRAM_K,
    LN2,
    BigramModel,
    UnigramModel,
)
from minillm.train.compressors import COMPRESSORS, compressor_table
from minillm.train.shards import TOKENIZER_FILE, read_meta

__all__ = ["BASELINES_FILE", "split_text", "baseline_report", "format_report"]


BASELINES_FILE = "baselines.json"


def split_text(data_dir: str | Path, split: str) -> bytes:
    """The UTF-8 text of a split, decoded from its ids with the folder's tokenizer.

    Documents are joined with nothing between them (the ``<|endoftext|>`` ids are dropped), so
    the length equals the split's ``bytes`` in ``meta.json``.
    """

    tokenizer = BPETokenizer.load(Path(data_dir) / TOKENIZER_FILE)
    ids = np.asarray(_load_split(data_dir, split))
    return tokenizer.decode_bytes(ids[ids != tokenizer.eot_id].tolist())


def _load_split(data_dir: str | Path, split: str) -> np.ndarray:
    return load_split(data_dir, split)


def _fingerprint(data_dir: Path, settings: dict[str, Any]) -> str:
    parts = [settings, (data_dir / "meta.json").read_text()]
    for name in ("train.bin", "val.bin", "test.bin", "tokenizer.bpe"):
        path = data_dir / name
        parts.append(path.stat().st_size if path.is_file() else None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def baseline_report(
    data_dir: str | Path,
    *,
    split: str = "val",
    alpha: float = DEFAULT_BIGRAM_ALPHA,
    unigram_weight: float = 0.0,
    compressors: Sequence[str] = tuple(COMPRESSORS),
    cache: bool = True,
) -> dict[str, Any]:
    """Unigram, bigram and compressor baselines on one split of a prepared data folder.

    The count models are fitted on ``train.bin``; the compressors are conditioned on the
    training text. Bits per byte use the split's bytes and tokens from ``meta.json``
    (``mean nats per token / ln 2 / bytes per token``), as lesson 05 does for the GPT.

    Args:
        data_dir: a folder written by :func:`minillm.train.shards.prepare` (or
            :func:`minillm.train.course_data`).
        split: the split to score, ``val`` or ``test``.
        alpha, unigram_weight: the bigram's smoothing (see :class:`BigramModel`).
        compressors: which of gzip, bz2 and xz to run (xz conditioned on the course's 4.8 MB
            of training text takes about 15 s on one core).
        cache: keep the result in ``baselines.json`` in the data folder and reuse it while the
            folder and the settings are unchanged.

    Returns:
        ``{"split", "tokens", "bytes", "bytes_per_token", "rows"}``, each row
        ``{"name", "kind", "nats_per_token", "bits_per_byte"}`` (``nats_per_token`` is None for
        the compressors, which do not see tokens).
    """

    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    if split not in meta.get("splits", {}) or split == "train":
        raise ValueError(f"split must be one of the held-out splits val or test, got {split!r}")
    unknown = [m for m in compressors if m not in COMPRESSORS]
    if unknown:
        raise ValueError(f"unknown compressor(s) {unknown}; allowed: {', '.join(COMPRESSORS)}")
    settings = {"split": split, "alpha": alpha, "unigram_weight": unigram_weight,
                "compressors": list(compressors), "k": DEFAULT_UNIGRAM_K, "version": 1}  # fmt: skip
    key = _fingerprint(data_dir, settings)
    cached = data_dir / BASELINES_FILE
    if cache and cached.is_file():
        stored = json.loads(cached.read_text())
        if stored.get("fingerprint") == key:
            return stored["report"]

    info = meta["splits"][split]
    bytes_per_token = info["bytes"] / info["tokens"]
    vocab_size = int(meta["vocab_size"])
    train, held_out = _load_split(data_dir, "train"), _load_split(data_dir, split)
    rows = []
    for name, model in [
        ("unigram", UnigramModel.fit(train, vocab_size)),
        ("bigram", BigramModel.fit(train, vocab_size, alpha=alpha, unigram_weight=unigram_weight)),
    ]:
        nll = model.nll(held_out)
        rows.append({"name": name, "kind": "counts", "nats_per_token": nll,
                     "bits_per_byte": nll / LN2 / bytes_per_token})  # fmt: skip
    if compressors:
        text, train_text = split_text(data_dir, split), split_text(data_dir, "train")
        for row in compressor_table(text, train_text, compressors):
            rows.append({"name": row["name"], "kind": "compressor", "nats_per_token": None,
                         "bits_per_byte": row["bits_per_byte"]})  # fmt: skip
    report = {"split": split, "tokens": info["tokens"], "bytes": info["bytes"],
              "bytes_per_token": bytes_per_token, "rows": rows}  # fmt: skip
    if cache:
        _write_json_atomic(cached, {"fingerprint": key, "settings": settings, "report": report})
    return report


def format_report(report: dict[str, Any], extra_rows: Sequence[dict[str, Any]] = ()) -> str:
    """A text table of :func:`baseline_report`'s rows (plus ``extra_rows``, say the GPT's),
    sorted from the best (fewest bits per byte) to the worst."""
    rows = sorted([*report["rows"], *extra_rows], key=lambda r: r["bits_per_byte"])
    width = max(len("model"), *(len(r["name"]) for r in rows))
    lines = [f"{'model':<{width}}  {'nats/token':>10}  {'bits/byte':>9}", "-" * (width + 23)]
    for r in rows:
        nats = "-" if r.get("nats_per_token") is None else f"{r['nats_per_token']:.3f}"
        lines.append(f"{r['name']:<{width}}  {nats:>10}  {r['bits_per_byte']:>9.3f}")
    return "\n".join(lines)
