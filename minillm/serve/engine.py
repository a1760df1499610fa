"""Batched generation: a per-slot KV cache, ragged batches, continuous batching.

Taught in lesson 11. :class:`SlotKVCache` keeps one row ("slot") per sequence, each with its own
length; :func:`forward_slots` runs new tokens of any set of slots in one forward pass, with an
attention mask over padding and per-row positions. :func:`generate_batch` uses it for prompts of
different lengths (left padding), and :class:`ContinuousBatcher` for requests that come and go. A static batch waits for its longest member; here every decoding step first
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
import torch.nn.functional as F

from minillm.model.layers import apply_rope
from minillm.serve.generation import SamplingParams, apply_processors, choose_next, make_processors

__all__ = [
    "SlotKVCache",
    "forward_slots",
    "generate_batch",
    "Request",
    "ContinuousBatcher",
    "EngineThread",
    "QueueFullError",
]


# ---------------------------------------------------------------------------------------------
# A KV cache with one slot per sequence: ragged batches and continuous batching
# ---------------------------------------------------------------------------------------------


class SlotKVCache:
    """Keys and values for ``n_slots`` independent sequences, each with its own length.

    ``keys``/``values`` are (n_layer, n_slots, kv_heads, max_len, head_dim). Slot ``s`` has
    filled columns ``0..lengths[s]-1``; ``valid[s, c]`` is False for padding columns, which no
    query may attend to. ``positions[s]`` counts the real (non-padding) tokens: the position of
    the slot's next token.
    """

    def __init__(self, model: Any, n_slots: int, max_len: int | None = None) -> None:
        config = model.config
        max_len = config.block_size if max_len is None else max_len
        if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 1:
            raise ValueError(f"n_slots must be a positive int, got {n_slots!r}")
        if not 0 < max_len <= config.block_size:
            raise ValueError(
                f"max_len must be in 1..block_size ({config.block_size}), got {max_len}"
            )
        weight = model.transformer.wte.weight
        shape = (config.n_layer, n_slots, config.num_kv_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.values = torch.zeros_like(self.keys)
        self.valid = torch.zeros(n_slots, max_len, dtype=torch.bool, device=weight.device)
        self.lengths = [0] * n_slots
        self.positions = [0] * n_slots

    @property
    def n_slots(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def free(self, slot: int) -> None:
        """Empty one slot so that a new sequence can use it."""
        self.lengths[slot] = 0
        self.positions[slot] = 0
        self.valid[slot] = False

    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        return 2 * self.keys.numel() * self.keys.element_size()


def _rows_tensor(rows: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(rows), dtype=torch.long, device=device)


@torch.no_grad()
def forward_slots(
    model: Any,
    ids: torch.Tensor,
    cache: SlotKVCache,
    slots: Sequence[int],
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run new tokens ``ids`` (B, T) of the sequences in ``slots``; logits (B, V) of the last ones.

    Row ``b`` continues slot ``slots[b]``: its keys and values are written after that slot's
    filled columns, and its queries see that slot's valid columns up to their own. With T > 1
    every slot must hold the same number of columns (a prefill); decoding steps (T = 1) may mix
    slots of any length. ``token_mask`` (B, T) marks real tokens (False: left padding).
    """
    B, T = ids.shape
    device = ids.device
    starts = [cache.lengths[s] for s in slots]
    if T > 1 and len(set(starts)) > 1:
        raise ValueError(f"a multi-token step needs slots of equal length, got lengths {starts}")
    if max(starts) + T > cache.max_len:
        raise ValueError(f"slots {list(slots)} would exceed the cache's {cache.max_len} columns")
    mask = torch.ones(B, T, dtype=torch.bool, device=device) if token_mask is None else token_mask
    rows = _rows_tensor(slots, device)
    start_t = torch.tensor(starts, device=device)
    cols = start_t[:, None] + torch.arange(T, device=device)  # (B, T) cache column of each token
    base = torch.tensor([cache.positions[s] for s in slots], device=device)
    positions = (base[:, None] + mask.long().cumsum(dim=1) - 1).clamp(min=0)  # pads: copies
    cache.valid[rows[:, None], cols] = mask
    width = max(starts) + T
    # Query t of row b sees valid columns c <= its own column; it always sees itself, so a
    # padding query has one key and a finite softmax (its output is never used).
    key_cols = torch.arange(width, device=device)
    attend = (key_cols[None, None, :] <= cols[:, :, None]) & cache.valid[rows, None, :width]
    attend |= key_cols[None, None, :] == cols[:, :, None]
    hidden = _embed(model, ids, positions)
    rope = _rope_for(model, positions)
    for layer, block in enumerate(model.transformer.h):
        hidden = _block_step(block, hidden, rope, cache, layer, rows, cols, attend[:, None], width)
    for b, s in enumerate(slots):
        cache.lengths[s] = starts[b] + T
        cache.positions[s] += int(mask[b].sum())
    return model.lm_head(model.transformer.ln_f(hidden[:, -1]))


def _embed(model: Any, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    x = model.transformer.wte(ids)
    if model.config.pos_emb == "learned":
        x = x + model.transformer.wpe(positions)
    return x


def _rope_for(model: Any, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    if model.config.pos_emb != "rope":
        return None
    return model.rope_cos[positions][:, None], model.rope_sin[positions][:, None]  # (B,1,T,hd)


def _block_step(
    block: Any,
    x: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    cache: SlotKVCache,
    layer: int,
    rows: torch.Tensor,
    cols: torch.Tensor,
    attend: torch.Tensor,
    width: int,
) -> torch.Tensor:
    """One transformer block over new tokens, reading and writing the slot cache."""

    attn = block.attn
    B, T, _ = x.shape
    q_width, kv_width = attn.n_head * attn.head_dim, attn.n_kv_head * attn.head_dim
    q, k, v = attn.c_attn(block.ln_1(x)).split([q_width, kv_width, kv_width], dim=-1)
    q = q.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)  # (B, nh, T, hd)
    k = k.view(B, T, attn.n_kv_head, attn.head_dim)  # (B, T, nkv, hd): the cache's write layout
    v = v.view(B, T, attn.n_kv_head, attn.head_dim)
    if rope is not None:
        q = apply_rope(q, *rope)
        k = apply_rope(k.transpose(1, 2), *rope).transpose(1, 2)
    keys, values = cache.keys[layer], cache.values[layer]  # (slots, nkv, max_len, hd)
    keys[rows[:, None], :, cols] = k.to(keys.dtype)
    values[rows[:, None], :, cols] = v.to(values.dtype)
    k_all, v_all = keys[rows, :, :width], values[rows, :, :width]  # (B, nkv, width, hd)
    y = F.scaled_dot_product_attention(
        q, k_all, v_all, attn_mask=attend, enable_gqa=attn.n_kv_head != attn.n_head
    )
    x = x + attn.c_proj(y.transpose(1, 2).reshape(B, T, q_width))
    return x + block.mlp(block.ln_2(x))


# ---------------------------------------------------------------------------------------------
# generate_batch: ragged prompts, left padding, an attention mask
# ---------------------------------------------------------------------------------------------


def _check_prompts(prompts: Any, vocab_size: int) -> list[list[int]]:
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    checked = []
    for i, prompt in enumerate(prompts):
        prompt = list(prompt)
        if not prompt:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
        bad = [t for t in prompt if isinstance(t, bool) or not isinstance(t, int)]
        bad += [t for t in prompt if isinstance(t, int) and not 0 <= t < vocab_size]
        if bad:
            raise ValueError(
                f"prompt {i} has id {bad[0]!r}; ids must be ints in 0..{vocab_size - 1}"
            )
        checked.append(prompt)
    return checked


@torch.no_grad()
def generate_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams | None = None,
    *,
    eos_id: int | None = None,
) -> list[list[int]]:
    """Continue prompts of different lengths in one batch; returns each row's new tokens.

    The prompts are left-padded to the longest, so that every row's next token sits in the last
    column; the padding is masked out of attention and does not count as a position, so each row
    gets exactly the tokens it would get alone. A row that emits ``eos_id`` stops (its token is
    kept) while the others go on.

    Raises:
        ValueError: empty or out-of-vocabulary prompts, or prompt + new tokens longer than the
            context.
    """
    params = params or SamplingParams(temperature=0.0)
    prompts = _check_prompts(prompts, model.config.vocab_size)
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > model.config.block_size:
        raise ValueError(
            f"the longest prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context length block_size={model.config.block_size}"
        )
    device = model.transformer.wte.weight.device
    B = len(prompts)
    ids = torch.zeros(B, longest, dtype=torch.long, device=device)
    mask = torch.zeros(B, longest, dtype=torch.bool, device=device)
    for b, prompt in enumerate(prompts):
        ids[b, longest - len(prompt) :] = torch.tensor(prompt, device=device)
        mask[b, longest - len(prompt) :] = True
    cache = SlotKVCache(model, B, longest + max_new_tokens)
    processors = make_processors(params)
    generator = params.generator(device)
    history = ids.masked_fill(~mask, -1)
    slots = list(range(B))
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * B
    was_training = model.training
    model.eval()
    try:
        logits = forward_slots(model, ids, cache, slots, mask)
        for step in range(max_new_tokens):
            next_id = choose_next(
                apply_processors(processors, history, logits), params.greedy, generator
            )
            for b in range(B):
                if not done[b]:
                    out[b].append(int(next_id[b]))
                    done[b] = eos_id is not None and out[b][-1] == eos_id
            if all(done) or step == max_new_tokens - 1:
                break
            history = torch.cat([history, next_id], dim=1)
            logits = forward_slots(model, next_id, cache, slots)
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# Continuous batching
# ---------------------------------------------------------------------------------------------

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
            step_logits = forward_slots(
                self.model, last.to(self.cache.keys.device), self.cache, decoding
            )
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
