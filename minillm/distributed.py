"""Running one training job on several processes: where this process stands, set-up, helpers.

Taught in lesson 06 (distributed training). :func:`minillm.train.train` reads the ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` variables that ``torchrun`` sets (:func:`dist_info`), joins the
process group (:func:`init_distributed`: gloo on CPUs, nccl on CUDA), trains on this rank's
shard of the data (:func:`shard_for_rank`) and averages scalars across ranks (:func:`all_mean`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from minillm.utils import auto_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int, low: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ValueError(
            f"environment variable {name}={text!r} must be an integer >= {low} (torchrun sets "
            f"it); unset it to run on one process"
        )
    return value


def dist_info() -> DistInfo:
    """Read RANK, LOCAL_RANK and WORLD_SIZE as ``torchrun`` sets them.

    Raises:
        ValueError: one of them is not an integer, or RANK is not below WORLD_SIZE.
    """
    info = DistInfo(
        rank=_env_int("RANK", 0, 0),
        local_rank=_env_int("LOCAL_RANK", 0, 0),
        world_size=_env_int("WORLD_SIZE", 1, 1),
    )
    if info.rank >= info.world_size:
        raise ValueError(
            f"RANK={info.rank} must be below WORLD_SIZE={info.world_size} (torchrun sets both)"
        )
    return info


def init_distributed(info: DistInfo, device: torch.device) -> None:
    import torch.distributed as dist

    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def pick_device(name: str, info: DistInfo) -> torch.device:
    device = auto_device(None if name == "auto" else name)
    if device.type == "cuda" and info.enabled and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def shard_for_rank(tokens: Any, info: DistInfo) -> Any:
    """The contiguous slice of ``tokens`` that this rank trains on (all of it on one process)."""
    if not info.enabled:
        return tokens
    size = len(tokens) // info.world_size
    return tokens[info.rank * size : (info.rank + 1) * size]
