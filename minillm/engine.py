"""Continuous batching: iteration-level scheduling over a per-slot KV cache.

Taught in lesson 11. A static batch waits for its longest member; here every decoding step first
admits waiting requests into free slots (one prefill each), then advances every running request
by one token in a single batched forward pass, then retires the finished ones, so a short request
leaves as soon as it is done and a new one takes its slot at the next step (Orca, Yu et al. 2022;
vLLM and llama.cpp's server schedule the same way).

:class:`ContinuousBatcher` is single-threaded and synchronous (``step()``); :class:`EngineThread`
runs one on a worker thread for the HTTP server (:mod:`minillm.serve`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from minillm.generate import (
    SamplingParams,
    SlotKVCache,
    apply_processors,
    choose_next,
    forward_slots,
    make_processors,
)

__all__ = ["Request", "ContinuousBatcher", "EngineThread", "QueueFullError"]

_ids = itertools.count()


class QueueFullError(RuntimeError):
    """The engine's waiting queue is full; try again later."""


@dataclass(eq=False)
class Request:
    """One sequence to continue.

    ``on_token(request, token_id)`` is called for every new token (on the engine's thread); it
    returns False to stop the request (for example at a stop string). ``on_finish(request)`` is
    called once, with ``finish_reason`` set to ``"stop"`` (eos or stopped by ``on_token``),
    ``"length"`` (``max_tokens`` or the context is full) or ``"cancelled"``.
    """

    prompt: list[int]
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    eos_id: int | None = None
    on_token: Callable[[Request, int], bool] | None = None
    on_finish: Callable[[Request], None] | None = None
    id: int = field(default_factory=lambda: next(_ids))
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    _cancelled: bool = False
    _slot: int | None = None
    _generator: torch.Generator | None = None
    _processors: list = field(default_factory=list)

    def cancel(self) -> None:
        """Ask the engine to drop this request (it frees the slot at its next step)."""
        self._cancelled = True

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class ContinuousBatcher:
    """Admit, decode, retire: one step at a time over ``n_slots`` KV-cache slots.

    Args:
        model: a :class:`minillm.model.GPT` (put in eval mode).
        n_slots: the largest running batch.
        max_queue: waiting requests beyond this raise :class:`QueueFullError` on :meth:`add`.
    """

    def __init__(self, model: Any, n_slots: int = 8, max_queue: int = 256) -> None:
        self.model = model.eval()
        self.cache = SlotKVCache(model, n_slots)
        self.block_size = model.config.block_size
        self.max_queue = max_queue
        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}  # slot -> request
        self.batch_sizes: list[int] = []  # running batch size at each decoding step
        self._lock = threading.Lock()

    # ---- queue ----------------------------------------------------------------------------

    def add(self, request: Request) -> Request:
        """Queue a request (thread-safe). Raises ValueError for a prompt that cannot fit."""
        prompt = request.prompt
        vocab = self.model.config.vocab_size
        if not prompt or any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"a prompt needs at least one token, ids in 0..{vocab - 1}")
        if request.params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {request.params.max_tokens}")
        if len(prompt) + request.params.max_tokens > self.block_size:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({request.params.max_tokens}) "
                f"exceeds the context length {self.block_size}"
            )
        with self._lock:
            if len(self.waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self.waiting)} requests are waiting (the limit)")
            self.waiting.append(request)
        return request

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    # ---- one scheduling step --------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Request]:
        """Admit into free slots, decode one token for every running request, retire; returns
        the requests that finished in this step."""
        finished = [r for r in list(self.running.values()) if r._cancelled]
        for request in finished:
            self._retire(request, "cancelled")
        logits: dict[int, torch.Tensor] = {}
        for request in self._admit():
            logits[request._slot] = self._prefill(request)
        decoding = [s for s in sorted(self.running) if s not in logits]
        if decoding:
            last = torch.tensor([[self.running[s].tokens[-1]] for s in decoding])
            step_logits = forward_slots(self.model, last.to(self.cache.keys.device), self.cache, decoding)
            for i, slot in enumerate(decoding):
                logits[slot] = step_logits[i : i + 1]
        if self.running:
            self.batch_sizes.append(len(self.running))
        for slot, row_logits in sorted(logits.items()):
            request = self.running[slot]
            reason = self._emit(request, self._choose(request, row_logits))
            if reason is not None:
                self._retire(request, reason)
                finished.append(request)
        return finished

    def run(self, requests: Sequence[Request], max_steps: int = 1_000_000) -> list[Request]:
        """Add ``requests`` and step until all are done (the synchronous use, for tests)."""
        for request in requests:
            self.add(request)
        for _ in range(max_steps):
            if self.idle:
                break
            self.step()
        return list(requests)

    # ---- helpers ----------------------------------------------------------------------------

    def _admit(self) -> list[Request]:
        admitted = []
        free = [s for s in range(self.cache.n_slots) if s not in self.running]
        with self._lock:
            while free and self.waiting:
                request = self.waiting.popleft()
                if request._cancelled:
                    self._finish(request, "cancelled")
                    continue
                request._slot = free.pop(0)
                self.running[request._slot] = request
                admitted.append(request)
        return admitted

    def _prefill(self, request: Request) -> torch.Tensor:
        device = self.cache.keys.device
        self.cache.free(request._slot)
        request._processors = make_processors(request.params)
        request._generator = request.params.generator(device)
        ids = torch.tensor([request.prompt], device=device)
        return forward_slots(self.model, ids, self.cache, [request._slot])

    def _choose(self, request: Request, logits: torch.Tensor) -> int:
        history = None
        if request._processors:
            history = torch.tensor([request.prompt + request.tokens], device=logits.device)
        scores = apply_processors(request._processors, history, logits)
        return int(choose_next(scores, request.params.greedy, request._generator))

    def _emit(self, request: Request, token: int) -> str | None:
        """Record a token; the finish reason when the request is now done, else None."""
        request.tokens.append(token)
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        keep_going = request.on_token(request, token) if request.on_token else True
        if not keep_going or (request.eos_id is not None and token == request.eos_id):
            return "stop"
        if len(request.tokens) >= request.params.max_tokens:
            return "length"
        if len(request.prompt) + len(request.tokens) >= self.block_size:
            return "length"
        return None

    def _retire(self, request: Request, reason: str) -> None:
        self.running.pop(request._slot, None)
        self.cache.free(request._slot)
        self._finish(request, reason)

    @staticmethod
    def _finish(request: Request, reason: str) -> None:
        request.finish_reason = reason
        if request.on_finish is not None:
            request.on_finish(request)


class EngineThread:
    """A :class:`ContinuousBatcher` stepping on its own daemon thread until :meth:`stop`.

    :meth:`submit` is thread-safe; callbacks run on the engine thread, so they must be quick
    (the server's hand the token to the event loop and return).
    """

    def __init__(self, batcher: ContinuousBatcher, idle_wait_s: float = 0.05) -> None:
        self.batcher = batcher
        self.idle_wait_s = idle_wait_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="minillm-engine", daemon=True)

    def start(self) -> EngineThread:
        self._thread.start()
        return self

    def submit(self, request: Request) -> Request:
        self.batcher.add(request)
        self._wake.set()
        return request

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.batcher.idle:
                self._wake.wait(self.idle_wait_s)
                self._wake.clear()
                continue
            try:
                self.batcher.step()
            except Exception as err:  # a bug must not hang clients: fail what is running
                self.error = err
                for request in list(self.batcher.running.values()):
                    self.batcher._retire(request, "error")
