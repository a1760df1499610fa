"""The token splits written by ``minillm prepare``, read back, and random training batches from them.

Taught in lesson 05 (pretraining): :func:`load_split` memory-maps ``train.bin`` / ``val.bin``,
:func:`check_tokens` explains when a split is too short for one example, and
:func:`batch_generator` gives each rank of a run its own reproducible stream of batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from minillm.data.packing import get_batch, load_tokens


def load_split(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map ``<data_dir>/<split>.bin`` written by :func:`minillm.data.pack_tokens`.

    Raises:
        FileNotFoundError: the folder or the split is missing (with the command that makes it).
        ValueError: the split holds no tokens.
    """
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.bin"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {split} split at {path}; make the dataset first with "
            f"`minillm prepare --out-dir {data_dir}` (it writes train.bin, val.bin, test.bin "
            "and tokenizer.bpe)"
        )

    tokens = load_tokens(path)
    if len(tokens) == 0:
        raise ValueError(f"the {split} split {path} is empty; re-run `minillm prepare`")
    return tokens


def check_tokens(tokens: Any, block_size: int, name: str) -> None:
    """Raise a clear error when a token sequence cannot yield a single training example."""
    if tokens is None:
        raise ValueError(f"no {name} tokens were given")
    length = len(tokens)
    if length == 0:
        raise ValueError(f"the {name} dataset is empty; it needs at least {block_size + 1} tokens")
    if length < block_size + 1:
        raise ValueError(
            f"the {name} dataset has {length} tokens, fewer than block_size + 1 = "
            f"{block_size + 1} that one example needs; use a smaller block_size or more data"
        )


def batch_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The generator that draws the training batches of ``rank`` in a run seeded with ``seed``.

    Each rank gets its own stream; evaluation uses separate generators, so evaluating never
    changes which batches training sees.
    """
    return torch.Generator().manual_seed(seed + 7919 * (rank + 1))


def draw_batch(
    tokens: Any, batch_size: int, block_size: int, generator: torch.Generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    return get_batch(tokens, batch_size, block_size, generator=generator, device=device)
