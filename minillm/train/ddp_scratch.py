"""Collectives and data parallelism written from point-to-point messages (lesson 06).

Taught in lesson 06 (distributed training). Everything here runs inside a process group that is
already initialised (``torchrun``, or :func:`minillm.train.distributed.launch` from a notebook):

* :func:`ring_all_reduce`: the bandwidth-optimal all-reduce built from ``send``/``recv``: a
  reduce-scatter round then an all-gather round around a ring of ranks.
* :func:`broadcast_parameters`: every rank starts from rank 0's weights.
* :class:`HookDataParallel`: gradients averaged as soon as each one is ready, with
  ``register_post_accumulate_grad_hook`` and asynchronous all-reduces that overlap the rest of the
  backward pass; :class:`BucketDataParallel`: the same with gradients packed into flat buckets, so
  a few large messages replace many small ones (what ``DistributedDataParallel`` does).
* :class:`ZeroAdamW`: ZeRO stage 1, AdamW whose state is split across the ranks: each rank
  updates its slice of the weights, then the slices are all-gathered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn


def _unique_parameters(module: nn.Module, trainable_only: bool = True) -> list[nn.Parameter]:
    """Parameters in registration order, each once (tied weights are one parameter)."""
    seen: set[int] = set()
    params = []
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        params.append(p)
    return params


def ring_all_reduce(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sum ``tensor`` over every rank, in place, with ``2 (N - 1)`` sends of ``1/N`` of it each.

    The tensor is cut into ``N`` chunks. Reduce-scatter: at step ``s`` each rank sends chunk
    ``rank - s`` to its right neighbour and adds the chunk it receives from its left one, so after
    ``N - 1`` steps rank ``r`` holds the full sum of chunk ``r + 1``. All-gather: the finished
    chunks travel once more around the ring, replacing instead of adding.

    Args:
        tensor: a contiguous tensor, the same shape and dtype on every rank.
        group: the process group (the default one if None).

    Returns:
        ``tensor``, now holding the sum.

    Raises:
        ValueError: the tensor is not contiguous.
    """
    if not tensor.is_contiguous():
        raise ValueError("ring_all_reduce needs a contiguous tensor; call .contiguous() first")
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if world == 1:
        return tensor
    right = dist.get_global_rank(group, (rank + 1) % world) if group else (rank + 1) % world
    left = dist.get_global_rank(group, (rank - 1) % world) if group else (rank - 1) % world
    chunks = list(tensor.view(-1).tensor_split(world))  # views: writing them writes the tensor
    buffer = torch.empty_like(chunks[0])  # the first chunk is the largest one

    def exchange(send_index: int, receive_into: torch.Tensor) -> None:
        outgoing = chunks[send_index]
        request = dist.isend(outgoing, right, group) if outgoing.numel() else None
        if receive_into.numel():
            dist.recv(receive_into, left, group)
        if request is not None:
            request.wait()

    for step in range(world - 1):  # reduce-scatter
        incoming = chunks[(rank - step - 1) % world]
        exchange((rank - step) % world, buffer[: incoming.numel()])
        incoming.add_(buffer[: incoming.numel()])
    for step in range(world - 1):  # all-gather
        exchange((rank + 1 - step) % world, chunks[(rank - step) % world])
    return tensor


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (all of them, frozen included)."""
    for tensor in [*_unique_parameters(module, trainable_only=False), *module.buffers()]:
        dist.broadcast(tensor.data, src)


class HookDataParallel:
    """Data parallelism from scratch: one asynchronous all-reduce per gradient, as it is ready.

    After ``backward()`` call :meth:`finish` before the optimizer step: it waits for the
    all-reduces still in flight. Gradients are divided by the world size before the sum, so each
    rank ends up with the mean of every rank's gradient (what ``DistributedDataParallel`` does).

    Args:
        module: the model; rank 0's weights are broadcast to every rank here.
    """

    def __init__(self, module: nn.Module) -> None:
        if not dist.is_initialized():
            raise ValueError("HookDataParallel needs an initialised process group")
        self.module = module
        self.world_size = dist.get_world_size()
        self.sync = True
        self._pending: list[dist.Work] = []
        broadcast_parameters(module)
        self._handles = [
            p.register_post_accumulate_grad_hook(self._on_gradient)
            for p in _unique_parameters(module)
        ]

    def _on_gradient(self, param: torch.Tensor) -> None:
        if not self.sync or param.grad is None:
            return  # inside no_sync(): keep accumulating locally
        param.grad.div_(self.world_size)
        self._pending.append(dist.all_reduce(param.grad, async_op=True))

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate gradients without communicating."""
        previous, self.sync = self.sync, False
        try:
            yield
        finally:
            self.sync = previous

    def finish(self) -> int:
        """Wait for every all-reduce still in flight; returns how many there were."""
        count = len(self._pending)
        for work in self._pending:
            work.wait()
        self._pending.clear()
        return count

    def remove(self) -> None:
        """Take the hooks off the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class BucketDataParallel(HookDataParallel):
    """:class:`HookDataParallel` with gradients packed into flat buckets of about ``bucket_mb``.

    Parameters go into buckets in reverse order (the last layers' gradients are ready first).
    When every gradient of a bucket has been copied in, one all-reduce sends the whole bucket;
    :meth:`finish` waits for them and copies the averages back into ``.grad``.

    Args:
        module: the model; rank 0's weights are broadcast to every rank here.
        bucket_mb: bucket size in MiB (a parameter larger than that gets a bucket of its own).
    """

    def __init__(self, module: nn.Module, bucket_mb: float = 25.0) -> None:
        if not bucket_mb > 0:
            raise ValueError(f"bucket_mb must be positive, got {bucket_mb!r}")
        self.buckets: list[list[torch.Tensor]] = []
        size, cap = 0, bucket_mb * 2**20
        for p in reversed(_unique_parameters(module)):
            nbytes = p.numel() * p.element_size()
            if not self.buckets or size + nbytes > cap:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += nbytes
        self._where = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._flat = [
            torch.zeros(sum(p.numel() for p in b), dtype=b[0].dtype) for b in self.buckets
        ]
        self._ready = [0] * len(self.buckets)
        self._offsets = {}
        for bucket in self.buckets:
            offset = 0
            for p in bucket:
                self._offsets[id(p)] = offset
                offset += p.numel()
        super().__init__(module)

    def _on_gradient(self, param: torch.Tensor) -> None:
        if not self.sync or param.grad is None:
            return
        index = self._where[id(param)]
        start = self._offsets[id(param)]
        self._flat[index][start : start + param.numel()].copy_(param.grad.view(-1))
        self._ready[index] += 1
        if self._ready[index] == len(self.buckets[index]):
            self._launch(index)

    def _launch(self, index: int) -> None:
        self._flat[index].div_(self.world_size)
        self._pending.append(dist.all_reduce(self._flat[index], async_op=True))
        self._ready[index] = -1  # sent

    def finish(self) -> int:
        """Send any bucket not yet full (a parameter without a gradient), wait, unpack."""
        for index, ready in enumerate(self._ready):
            if ready > 0:
                self._launch(index)
        count = super().finish()
        if count:
            for index, bucket in enumerate(self.buckets):
                for p in bucket:
                    if p.grad is not None:
                        start = self._offsets[id(p)]
                        p.grad.copy_(self._flat[index][start : start + p.numel()].view_as(p))
                self._flat[index].zero_()
        self._ready = [0] * len(self.buckets)
        return count


class ZeroAdamW:
    """ZeRO stage 1 from scratch: AdamW whose state is sharded, each rank updating 1/N of it.

    The trainable parameters are viewed as one flat vector of ``P`` numbers, padded to a multiple
    of ``N``; rank ``r`` owns numbers ``r·P/N`` to ``(r+1)·P/N``. :meth:`step` averages the
    gradients (one all-reduce of the flat vector: it replaces a data-parallel wrapper), updates
    this rank's slice with an AdamW whose ``m`` and ``v`` cover that slice only, then all-gathers
    the slices so every rank holds all the weights again. Weight decay applies to every number
    (as ``torch.optim.AdamW`` on all parameters), and every trainable parameter needs a gradient.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        self.params = _unique_parameters(module)
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        self.numel = sum(p.numel() for p in self.params)
        self.shard_size = -(-self.numel // self.world_size)  # ceiling: the last shard is padded
        start = self.rank * self.shard_size
        flat = self._flatten([p.detach() for p in self.params])
        self.shard = nn.Parameter(flat[start : start + self.shard_size].clone())
        self.inner = torch.optim.AdamW(
            [self.shard], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay
        )

    def _flatten(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        return torch.nn.functional.pad(flat, (0, self.shard_size * self.world_size - self.numel))

    @torch.no_grad()
    def step(self) -> None:
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:
            raise RuntimeError(f"parameters {missing[:5]} have no gradient; run backward first")
        flat_grad = self._flatten([p.grad for p in self.params])
        dist.all_reduce(flat_grad)  # the data-parallel average: sum, then divide
        flat_grad /= self.world_size
        start = self.rank * self.shard_size
        self.shard.grad = flat_grad[start : start + self.shard_size].clone()
        self.inner.step()  # this rank's slice only
        slices = [torch.empty_like(self.shard) for _ in range(self.world_size)]
        dist.all_gather(slices, self.shard.detach())
        flat = torch.cat(slices)
        offset = 0
        for p in self.params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_bytes(self) -> int:
        """Bytes of this rank's AdamW state (``m`` and ``v`` of its slice; the step count left out)."""
        state = self.inner.state.get(self.shard, {})
        return sum(v.numel() * v.element_size() for v in state.values() if v.dim() > 0)
