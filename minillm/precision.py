"""Numeric formats for training: the dtype names minillm accepts and the autocast context for each.

Taught in lesson 07 (mixed precision); :func:`minillm.train.train` uses :func:`autocast_context`
for its ``dtype`` setting.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""The ``dtype`` names a training run accepts, and the torch dtype each one means."""


def autocast_context(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``dtype`` on ``device`` (a no-op for float32).

    Raises:
        ValueError: float16 was asked for on a device other than CUDA.
    """
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "float16" and device.type != "cuda":
        raise ValueError(
            f"dtype='float16' needs a CUDA GPU (it relies on loss scaling); on {device.type} "
            "use dtype='bfloat16' or dtype='float32'"
        )
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])
