"""Token files (lesson 01): pack token ids into a flat binary file with a JSON sidecar, read
them back as a memory map, and draw training batches.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minillm.data.corpus import TOKENS_FORMAT, TOKENS_VERSION

__all__ = ["token_dtype", "pack_tokens", "read_token_sidecar", "load_tokens", "get_batch"]


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
