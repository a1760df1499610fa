"""The experiments of lesson 06, as functions that spawned ranks can import.

Taught in lesson 06 (distributed training). :func:`minillm.train.distributed.launch` runs each
``*_section`` function on every rank of a small gloo group and hands back what each rank returned;
the lesson (and ``tests/unit/test_distributed.py`` and ``bench/distributed.py``) compares that with
one process doing the same work. A spawned process imports its function by name, which is why these
live in the package and not in the notebook.

The toy problem is a two-layer GPT with tied embeddings (:func:`toy_model`) and a fresh random
global batch per step (:func:`toy_batch`); rank ``r`` of ``N`` takes rows ``r/N`` to ``(r+1)/N``
of it, so ``N`` ranks together see exactly the batch one process sees.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.model.config import GPTConfig
from minillm.model.gpt import GPT
from minillm.train.ddp_scratch import (
    BucketDataParallel,
    HookDataParallel,
    ZeroAdamW,
    broadcast_parameters,
    ring_all_reduce,
)

TOY_SHAPE: dict[str, int] = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def toy_model(seed: int = 0, *, frozen: bool = False) -> GPT:
    """The lesson's small GPT (tied embeddings); ``frozen`` freezes the position embedding."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**TOY_SHAPE))
    if frozen:
        model.transformer.wpe.weight.requires_grad_(False)
    return model


def toy_batch(step: int, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s global batch: ``(inputs, targets)``, each ``(batch_size, block_size)``."""
    g = torch.Generator().manual_seed(1000 + step)
    T = TOY_SHAPE["block_size"]
    windows = torch.randint(0, TOY_SHAPE["vocab_size"], (batch_size, T + 1), generator=g)
    return windows[:, :-1], windows[:, 1:]


def rows_of_rank(tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's equal share of the batch rows."""
    if tensor.shape[0] % world:
        raise ValueError(f"batch of {tensor.shape[0]} rows does not split over {world} ranks")
    return tensor.tensor_split(world)[rank]


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """``"sgd"`` (lr 0.1) or ``"adamw"`` (lr 3e-3, weight decay 0.1) on the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=3e-3, weight_decay=0.1)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the parameters by name (tied weights once)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the gradients by name (parameters without one are left out)."""
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two name → tensor maps with the same names."""
    if a.keys() != b.keys():
        raise ValueError(f"different names: {sorted(a.keys() ^ b.keys())}")
    return max((a[k] - b[k]).abs().max().item() for k in a)


def train_toy(
    model: nn.Module,
    optimizer: str,
    steps: int,
    *,
    rank: int = 0,
    world: int = 1,
    wrapper: Any = None,
    batch_size: int = 8,
    micro_batches: int = 1,
) -> dict[str, torch.Tensor]:
    """Train ``model`` on this rank's rows of the global batches; returns the final weights.

    ``wrapper`` (``HookDataParallel``, ``BucketDataParallel`` or ``DistributedDataParallel``)
    runs the forward pass and averages the gradients; with ``micro_batches > 1`` this rank's rows
    are cut into that many micro-batches, accumulated under ``no_sync`` but for the last.
    """
    forward = wrapper if wrapper is not None else model
    opt = make_optimizer(optimizer, model)
    for step in range(steps):
        x, y = (rows_of_rank(t, rank, world) for t in toy_batch(step, batch_size))
        for i, (xm, ym) in enumerate(
            zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches), strict=True)
        ):
            last = i == micro_batches - 1
            sync = forward.no_sync() if (wrapper is not None and not last) else _nothing()
            with sync:
                _, loss = forward(xm, ym)
                (loss / micro_batches).backward()
        if isinstance(wrapper, HookDataParallel):
            wrapper.finish()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return weights(model)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def one_step_gradients(model: nn.Module, *, rank: int = 0, world: int = 1, wrapper: Any = None):
    """Gradients after one forward/backward on this rank's rows of step 0's batch."""
    forward = wrapper if wrapper is not None else model
    x, y = (rows_of_rank(t, rank, world) for t in toy_batch(0))
    _, loss = forward(x, y)
    loss.backward()
    if isinstance(wrapper, HookDataParallel):
        wrapper.finish()
    return gradients(model)


def reference(steps: int) -> dict[str, Any]:
    """One process on the whole global batch: what :func:`equivalence_section` must match."""
    return {
        "grads": one_step_gradients(toy_model(0)),
        "sgd": train_toy(toy_model(0), "sgd", steps),
        "adamw": train_toy(toy_model(0), "adamw", steps),
        "frozen_adamw": train_toy(toy_model(0, frozen=True), "adamw", steps),
    }


def _checksum(model: nn.Module) -> float:
    return sum(p.detach().double().sum().item() for p in model.parameters())


def equivalence_section(
    rank: int, world: int, steps: int = 20, fsdp: bool = False
) -> dict[str, Any]:
    """Run on every rank: data parallelism from scratch and torch's DDP on the toy problem.

    Every model starts from seed ``rank`` (different weights on every rank), so equal results
    prove the broadcast. Returns this rank's checksums before and after the broadcast, gradients
    after one step, and final weights for each variant (names as in :func:`reference`); with
    ``fsdp``, also what :func:`fsdp_section` returns, under ``"fsdp"``.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict[str, Any] = {}
    model = toy_model(seed=rank)
    out["before_broadcast"] = _checksum(model)
    dp = HookDataParallel(model)
    out["after_broadcast"] = _checksum(model)
    out["grads"] = one_step_gradients(model, rank=rank, world=world, wrapper=dp)
    out["all_reduces_per_step"] = {"hooks": sum(1 for p in model.parameters() if p.requires_grad)}

    def run(kind: str, optimizer: str, frozen: bool = False, **kw: Any) -> dict[str, torch.Tensor]:
        model = toy_model(seed=rank, frozen=frozen)
        if kind == "hooks":
            wrapper: Any = HookDataParallel(model)
        elif kind == "bucket":
            wrapper = BucketDataParallel(model, bucket_mb=0.02)
            out["all_reduces_per_step"]["buckets"] = len(wrapper.buckets)
        else:
            wrapper = DDP(model)
        return train_toy(model, optimizer, steps, rank=rank, world=world, wrapper=wrapper, **kw)

    out["sgd"] = run("hooks", "sgd")
    out["adamw"] = run("hooks", "adamw")
    out["bucket_adamw"] = run("bucket", "adamw")
    out["ddp_adamw"] = run("ddp", "adamw")
    out["frozen_adamw"] = run("hooks", "adamw", frozen=True)
    out["frozen_ddp_adamw"] = run("ddp", "adamw", frozen=True)
    out["no_sync_adamw"] = run("ddp", "adamw", micro_batches=2)
    if fsdp:
        out["fsdp"] = fsdp_section(rank, world, steps)
    return out


def time_all_reduce(fn: Any, numel: int, repeats: int) -> float:
    """Median seconds of ``fn(tensor)`` on a float32 tensor of ``numel`` (all ranks in step)."""
    tensor = torch.ones(numel)
    fn(tensor)  # warm-up: connections and buffers
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        fn(tensor)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def collectives_section(
    rank: int, world: int, sizes_bytes: list[int], repeats: int = 3, ring_sizes: tuple = ()
) -> dict[str, Any]:
    """Run on every rank: the three collectives, the ring against ``dist.all_reduce``, timings.

    Returns this rank's tensors before and after broadcast, all-reduce and all-gather; the
    largest difference between :func:`ring_all_reduce` and ``dist.all_reduce`` for several sizes
    (some not divisible by the world size, some smaller than it); and the median seconds of gloo's
    all-reduce (and of the ring) for every size in ``sizes_bytes``.
    """
    out: dict[str, Any] = {}
    mine = torch.tensor([10.0 * rank + 1, 10.0 * rank + 2])
    copy = mine.clone()
    dist.broadcast(copy, src=0)
    out["broadcast"] = (mine, copy)
    copy = mine.clone()
    dist.all_reduce(copy, op=dist.ReduceOp.SUM)
    out["all_reduce"] = (mine, copy)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    out["all_gather"] = (mine, torch.stack(gathered))

    out["ring_vs_gloo"] = {}
    for numel in (1, 3, 1000, 65_537, *ring_sizes):
        x = torch.randn(numel, generator=torch.Generator().manual_seed(100 * rank + numel))
        ours, theirs = ring_all_reduce(x.clone()), x.clone()
        dist.all_reduce(theirs)
        out["ring_vs_gloo"][numel] = (ours - theirs).abs().max().item()

    out["seconds"] = {"gloo": {}, "ring": {}}
    for nbytes in sizes_bytes:
        numel = max(1, nbytes // 4)
        out["seconds"]["gloo"][nbytes] = time_all_reduce(dist.all_reduce, numel, repeats)
        out["seconds"]["ring"][nbytes] = time_all_reduce(ring_all_reduce, numel, repeats)
    return out


def scaling_run(
    rank: int, world: int, model_overrides: dict, global_batch: int, steps: int
) -> dict[str, float]:
    """Time training steps of a GPT on ``global_batch`` rows split over the ranks.

    With more than one rank the model is wrapped in ``DistributedDataParallel`` and the steps are
    timed twice: normally, and all under ``no_sync`` (the same computation without the
    all-reduce), which gives the share of a step spent communicating. Works without a process
    group when ``world == 1``.

    Returns:
        ``seconds_per_step``, ``tokens_per_s`` (the whole global batch), ``compute_seconds``
        (``no_sync`` steps) and ``comm_share``.
    """
    torch.manual_seed(0)
    config = GPTConfig.preset("course", **model_overrides)
    model = GPT(config)
    forward: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(rank)
    rows = global_batch // world
    x = torch.randint(0, config.vocab_size, (rows, config.block_size), generator=g)

    def timed(no_sync: bool) -> float:
        times = []
        for _ in range(steps + 1):  # the first step warms up
            if world > 1:
                dist.barrier()
            start = time.perf_counter()
            ctx = forward.no_sync() if (no_sync and world > 1) else _nothing()
            with ctx:
                _, loss = forward(x, x)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    step = timed(no_sync=False)
    compute = timed(no_sync=True) if world > 1 else step
    return {
        "seconds_per_step": step,
        "tokens_per_s": global_batch * config.block_size / step,
        "compute_seconds": compute,
        "comm_share": max(0.0, 1 - compute / step),
    }


def fsdp_section(rank: int, world: int, steps: int = 20) -> dict[str, Any]:
    """Run on every rank: the toy GPT sharded with FSDP2 (``fully_shard``), trained with AdamW.

    Each transformer block is sharded on its own, then the rest (embeddings, tied output layer,
    final norm) at the root. Returns the full weights after ``steps`` steps (gathered, to compare
    with :func:`reference`) and this rank's bytes of parameters and of AdamW state, beside the
    unsharded sizes.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    model = toy_model(0)  # FSDP shards each rank's copy: every rank must build the same one
    full_param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = make_optimizer("adamw", model)
    for step in range(steps):
        x, y = (rows_of_rank(t, rank, world) for t in toy_batch(step))
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def local_bytes(tensors: Any) -> int:
        return sum(t.to_local().numel() * t.element_size() for t in tensors if t.dim() > 0)

    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return {
        "weights": {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()},
        "param_bytes": local_bytes(model.parameters()),
        "optimizer_bytes": local_bytes(state),
        "full_param_bytes": full_param_bytes,
        "full_optimizer_bytes": 2 * full_param_bytes,  # AdamW's m and v
    }


def zero1_section(rank: int, world: int, steps: int = 20) -> dict[str, Any]:
    """Run on every rank: the toy GPT trained with :class:`ZeroAdamW` (ZeRO stage 1).

    Ranks start from different seeds (the broadcast makes them equal) and train on their rows of
    the global batches with the hyper-parameters of ``make_optimizer("adamw")``, so the weights
    must match :func:`reference`'s ``"adamw"``. Returns them with this rank's AdamW state bytes
    beside the state plain AdamW holds for the whole model.
    """
    model = toy_model(rank)
    broadcast_parameters(model)
    opt = ZeroAdamW(model, lr=3e-3, weight_decay=0.1)
    for step in range(steps):
        x, y = (rows_of_rank(t, rank, world) for t in toy_batch(step))
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    full = 2 * sum(p.numel() * p.element_size() for p in opt.params)  # AdamW's m and v
    return {"weights": weights(model), "state_bytes": opt.state_bytes(), "full_state_bytes": full}
