"""Running one training job on several processes: where this process stands, set-up, helpers.

Taught in lesson 06 (distributed training). :func:`minillm.train.train` reads the ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` variables that ``torchrun`` sets (:func:`dist_info`), joins the
process group (:func:`init_distributed`: gloo on CPUs, nccl on CUDA), trains on this rank's rows
of each global batch (:func:`rows_of_rank`) and averages scalars across ranks (:func:`all_mean`).
Two strategies share the work (:data:`STRATEGIES`): DDP replicates the model, FSDP2 shards it
(:func:`shard_model`); under FSDP a checkpoint gathers the full, unsharded state on rank 0
(:func:`full_model_state`, :func:`full_optimizer_state`), in the format one process writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from minillm.utils.environment import auto_device


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


def rows_of_rank(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's rows of a global batch: rows ``rank·B`` to ``(rank+1)·B`` of ``world·B``.

    Every rank draws the same global batch from the same generator and keeps its own rows, so
    the global batch depends on the seed and ``batch_size × world_size`` only: ``N`` ranks of
    ``B`` rows train on exactly what one process with ``N·B`` rows does.
    """
    if not info.enabled:
        return batch
    rows = batch.shape[0] // info.world_size
    return batch[info.rank * rows : (info.rank + 1) * rows]


# --- Sharding the model with FSDP2, and checkpoints of the full state -------------------------

STRATEGIES = ("ddp", "fsdp")  # how several ranks share the work (one process ignores it)


def shard_model(model: nn.Module) -> nn.Module:
    """Shard ``model`` over all ranks with FSDP2: each transformer block, then the root.

    Sharding per block lets a block's weights be all-gathered just before it runs and freed
    after; the root unit holds the rest (embeddings, tied output layer, final norm). Every
    parameter becomes a ``DTensor`` holding this rank's slice of its first dimension. The
    process group must already exist. Returns the same module (its class now an FSDP subclass).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    for block in blocks if blocks is not None else []:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: the local shard of an FSDP ``DTensor``, else the tensor."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def all_finite(model: nn.Module, info: DistInfo) -> bool:
    """Whether every weight of every rank is finite (the same answer on all ranks)."""
    finite = all(bool(torch.isfinite(local_part(p)).all()) for p in model.parameters())
    if not info.enabled:
        return finite
    import torch.distributed as dist

    flag = torch.tensor(1 if finite else 0)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # gathered to whole tensors, on the CPU of rank 0 only (the other ranks get empty dicts)
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _tied_names(model: nn.Module) -> dict[str, str]:
    """Parameter names that share one tensor with an earlier name (tied weights)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied[name] = first[id(param)]
        else:
            first[id(param)] = name
    return tied


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of an FSDP model on rank 0 (``{}`` elsewhere); every rank calls it.

    Gathering copies tied weights separately; they are made one tensor again, so the checkpoint
    stores them once, as :func:`minillm.train.checkpoint.save_checkpoint` does for an unsharded model.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_full_options())
    for name, target in _tied_names(model).items():
        if name in state and target in state:
            state[name] = state[target]
    return state


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded optimizer state on rank 0 (``{}`` elsewhere), keyed as one process keys it.

    PyTorch gathers it keyed by parameter name; ``optimizer.state_dict()`` numbers the
    parameters in the order of the groups, so the names are turned back into those numbers.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    named = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if not named:
        return {}
    number: dict[str, int] = {}
    groups = []
    for group in named["param_groups"]:
        ids = [number.setdefault(name, len(number)) for name in group["params"]]
        groups.append({**group, "params": ids})
    state = {number[name]: entries for name, entries in named["state"].items()}
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a full state (as one process saves it) into the optimizer of an FSDP model."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = {id(p): n for n, p in model.named_parameters()}
    ordered = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    named = {
        "state": {ordered[index]: entries for index, entries in state["state"].items()},
        "param_groups": [
            {**group, "params": [ordered[index] for index in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    # every rank read the whole file: each keeps its own slices, no broadcast needed
    set_optimizer_state_dict(
        model, optimizer, named, options=StateDictOptions(full_state_dict=True)
    )


# --- Launching a few CPU ranks from a notebook or a test (lesson 06) ----------------------------
#
# ``torchrun`` starts processes from a shell. A lesson or a test wants them from Python, with the
# results back: :func:`launch` spawns ``world_size`` fresh interpreters, joins them into a gloo
# group on a free loopback port, calls ``fn(rank, world_size, *args)`` in each, and returns what
# every rank returned. Spawned interpreters import ``fn`` by name, so it must live in a module
# (a function typed into a notebook cannot be sent to them).


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launched_rank(
    fn: Any, rank: int, world_size: int, port: int, threads: int, args: tuple, queue: Any
) -> None:
    """Body of one spawned rank: join the group, run ``fn``, send back its result or traceback."""
    import pickle
    import traceback

    import torch.distributed as dist

    try:
        torch.set_num_threads(threads)
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )  # fmt: skip
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        queue.put((rank, True, pickle.dumps(result)))  # plain pickle: tensors travel by value
    except BaseException:  # noqa: BLE001 - every failure goes back to the caller, with its trace
        queue.put((rank, False, traceback.format_exc()))


def launch(
    fn: Any, world_size: int = 2, *, args: tuple = (), threads: int = 1, timeout: float = 300.0
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned CPU processes (gloo).

    Args:
        fn: a function defined at the top level of an importable module (not ``__main__``).
        world_size: number of processes (ranks), at least 1.
        args: extra positional arguments, passed to every rank (picklable).
        threads: intra-op threads per rank (``torch.set_num_threads``).
        timeout: seconds to wait for all ranks before they are stopped.

    Returns:
        The value each rank returned, indexed by rank.

    Raises:
        ValueError: ``fn`` cannot be imported by a spawned process, or bad sizes.
        RuntimeError: a rank raised (its traceback is in the message) or the run timed out.
    """
    import multiprocessing as mp
    import pickle
    import queue as queue_module
    import time

    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not callable(fn) or module in (None, "__main__") or "<" in qualname:
        raise ValueError(
            f"launch needs a top-level function of an importable module (spawned processes import "
            f"it by name), got {fn!r}; move it into a .py file"
        )
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    context = mp.get_context("spawn")
    results_queue = context.Queue()
    port = free_port()
    processes = [
        context.Process(
            target=_launched_rank,
            args=(fn, rank, world_size, port, threads, tuple(args), results_queue),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(results) < world_size and not errors:
            try:
                rank, ok, payload = results_queue.get(timeout=0.2)
            except queue_module.Empty:
                dead = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0)]
                if dead:  # died before it could report (killed, or failed while starting)
                    errors.append(f"rank {dead[0]} exited with code {processes[dead[0]].exitcode}")
                elif time.monotonic() > deadline:
                    errors.append(f"timed out after {timeout:.0f} s waiting for the ranks")
                continue
            if ok:
                results[rank] = pickle.loads(payload)
            else:  # the other ranks may be blocked in a collective: they are stopped below
                errors.append(f"rank {rank} failed:\n{payload}")
    finally:
        for process in processes:
            process.join(timeout=5 if not errors else 0.5)
            if process.is_alive():
                process.terminate()
                process.join()
    if errors:
        raise RuntimeError("\n".join(errors))
    return [results[rank] for rank in range(world_size)]
