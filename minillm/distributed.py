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
