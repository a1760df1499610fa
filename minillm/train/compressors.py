"""Compressors as baselines (lesson 05): bits per byte of gzip, bz2 and lzma, alone and
conditioned on the training text.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["COMPRESSORS", "compressed_size", "compressor_bits_per_byte", "compressor_table"]


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    # mtime=0 keeps the gzip header (and so the size) the same from run to run.
    "gzip": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "xz": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}
"""Each compressor at its strongest setting: gzip -9, bz2 -9, xz -9e."""


def _as_bytes(text: str | bytes, name: str) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    raise TypeError(f"{name} must be a str or bytes, got {type(text).__name__}")


def compressed_size(data: str | bytes, method: str = "gzip") -> int:
    """Bytes of ``data`` (UTF-8 for a str) after compression with ``method``."""
    if method not in COMPRESSORS:
        raise ValueError(f"unknown compressor {method!r}; allowed: {', '.join(COMPRESSORS)}")
    return len(COMPRESSORS[method](_as_bytes(data, "data")))


def compressor_bits_per_byte(
    text: str | bytes, method: str = "gzip", context: str | bytes | None = None
) -> float:
    """Bits per UTF-8 byte that a compressor spends on ``text``.

    Alone: ``8 * len(C(text)) / len(text)``. Conditioned on ``context`` (the training text):
    ``8 * (len(C(context + text)) - len(C(context))) / len(text)``, the extra bytes the text
    costs once the compressor has seen the context, as a language model has seen its
    training data. gzip can only use the last 32 KB of the context and bz2 the rest of the
    900 KB block the text starts in; xz -9 (64 MB dictionary) can use all of it.

    Raises:
        ValueError: empty ``text`` or an unknown ``method``.
        TypeError: ``text`` or ``context`` is not a str or bytes.
    """
    data = _as_bytes(text, "text")
    if not data:
        raise ValueError("text is empty: bits per byte of nothing is undefined")
    if method not in COMPRESSORS:
        raise ValueError(f"unknown compressor {method!r}; allowed: {', '.join(COMPRESSORS)}")
    compress = COMPRESSORS[method]
    if context is None:
        return 8 * len(compress(data)) / len(data)
    before = _as_bytes(context, "context")
    extra = len(compress(before + data)) - len(compress(before))
    return 8 * extra / len(data)


def compressor_table(
    val_text: str | bytes,
    train_text: str | bytes | None = None,
    methods: Sequence[str] = tuple(COMPRESSORS),
) -> list[dict[str, Any]]:
    """Bits per byte of ``val_text`` for each compressor, alone and conditioned on ``train_text``.

    Returns:
        One row per (method, conditioning): ``{"name", "method", "conditioned", "bits_per_byte"}``.
    """
    rows = []
    for method in methods:
        for context in (None, train_text) if train_text is not None else (None,):
            conditioned = context is not None
            rows.append(
                {
                    "name": f"{method} ({'conditioned on train' if conditioned else 'alone'})",
                    "method": method,
                    "conditioned": conditioned,
                    "bits_per_byte": compressor_bits_per_byte(val_text, method, context),
                }
            )
    return rows
