"""Generation: logits processors, sampling, the KV-cached decoding loop, batches and streaming.

Taught in lesson 11 (inference and serving). The pieces, in the order the lesson builds them:

* **Logits processors** (:class:`Temperature`, :class:`TopK`, :class:`TopP`, :class:`MinP`,
  :class:`RepetitionPenalty`): each maps ``(history, logits)`` to new logits, exactly as the
  ``transformers`` processor of the same name does; :func:`make_processors` chains them in
  Hugging Face's order (penalties first, then temperature, top-k, top-p, min-p).
* :func:`generate`: the KV-cached loop behind :meth:`minillm.model.GPT.generate` (and a
  ``use_cache=False`` recompute baseline that gives the same tokens).
* Ragged batches and continuous batching live in :mod:`minillm.serve.engine`.
* :class:`TextStream` and :func:`stream_text`: text pieces that never split a UTF-8 character and
  that stop at stop strings.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from minillm.model.sampling import cached_steps, check_sampling_args, recomputed_steps

__all__ = [
    "LogitsProcessor",
    "Temperature",
    "TopK",
    "TopP",
    "MinP",
    "RepetitionPenalty",
    "SamplingParams",
    "make_processors",
    "apply_processors",
    "choose_next",
    "generate",
    "TextStream",
    "stream_text",
]


# ---------------------------------------------------------------------------------------------
# Logits processors
# ---------------------------------------------------------------------------------------------


class LogitsProcessor(Protocol):
    """Anything that maps ``(history (B, T) ids, logits (B, V))`` to new logits (B, V)."""

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


def _check_number(name: str, value: Any, low: float, high: float, *, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Temperature:
    r"""Divide the logits by ``temperature``: :math:`p_i \propto e^{z_i / T}`.

    Below 1 the distribution sharpens, above 1 it flattens (``TemperatureLogitsWarper``).
    """

    temperature: float

    def __post_init__(self) -> None:
        _check_number("temperature", self.temperature, 0.0, math.inf, low_open=True)

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scaled = logits / self.temperature
        if bool((torch.isinf(scaled) & torch.isfinite(logits)).any()):
            # a tiny temperature overflowed: shift the best logit to 0 first (softmax does not
            # change), so the best token stays at 0 and the others go to -inf, never inf - inf
            shifted = logits - logits.amax(dim=-1, keepdim=True)
            scaled = torch.nan_to_num(shifted / self.temperature, nan=0.0)
        return scaled


@dataclass(frozen=True)
class TopK:
    """Keep the ``top_k`` largest logits (ties with the k-th kept too); the rest become -inf."""

    top_k: int

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {self.top_k!r}")

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, logits.shape[-1])
        kth_best = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth_best, float("-inf"))


@dataclass(frozen=True)
class TopP:
    r"""Nucleus sampling: keep the smallest set of most likely tokens whose mass reaches ``top_p``.

    A token is dropped when the mass of the tokens *less* likely than or as likely as it is at
    most :math:`1 - p`, which is Hugging Face's rule (``TopPLogitsWarper``); the most likely token
    always stays.
    """

    top_p: float

    def __post_init__(self) -> None:
        _check_number("top_p", self.top_p, 0.0, 1.0, low_open=False)

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=False)  # least likely first
        mass_up_to = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = mass_up_to <= 1 - self.top_p
        drop_sorted[..., -1:] = False  # the most likely token is never dropped
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


@dataclass(frozen=True)
class MinP:
    r"""Drop tokens whose probability is below ``min_p`` times the top token's: :math:`p_i < m\,p_{max}`."""

    min_p: float

    def __post_init__(self) -> None:
        _check_number("min_p", self.min_p, 0.0, 1.0, low_open=False)

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        drop.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
        return logits.masked_fill(drop, float("-inf"))


@dataclass(frozen=True)
class RepetitionPenalty:
    r"""Make tokens already in the history less likely (Keskar et al., 2019, CTRL).

    A seen token's logit :math:`z` becomes :math:`z / r` when positive and :math:`z \cdot r` when
    negative (``RepetitionPenaltyLogitsProcessor``). Negative ids in ``history`` are padding and
    are ignored.
    """

    penalty: float

    def __post_init__(self) -> None:
        _check_number("repetition_penalty", self.penalty, 0.0, math.inf, low_open=True)

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        seen = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
        seen.scatter_(1, torch.where(history >= 0, history, vocab), True)  # pads land in column V
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen[:, :vocab], penalised, logits)


@dataclass
class SamplingParams:
    """How to pick each token. ``temperature=0`` is greedy; a ``seed`` makes sampling repeatable.

    ``stop`` strings end the text (they are not part of it); ``max_tokens`` bounds its length.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_number("temperature", self.temperature, 0.0, math.inf, low_open=False)
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ValueError(f"max_tokens must be an int, got {self.max_tokens!r}")
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        make_processors(self)  # validates the other fields

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A generator seeded with ``seed`` (None when there is no seed)."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(self.seed))


def make_processors(
    params: SamplingParams | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
) -> list[LogitsProcessor]:
    """The processors for these settings in Hugging Face's order; no-op settings are left out.

    Penalties see the raw logits, then temperature, top-k, top-p and min-p. Greedy decoding
    (temperature 0) keeps only the penalty: the others never change the arg-max.
    """
    if params is not None:
        temperature, top_k, top_p = params.temperature, params.top_k, params.top_p
        min_p, repetition_penalty = params.min_p, params.repetition_penalty
    processors: list[LogitsProcessor] = []
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(repetition_penalty))
    _check_number("temperature", temperature, 0.0, math.inf, low_open=False)
    greedy = temperature == 0
    if temperature not in (0, 1):
        processors.append(Temperature(temperature))
    for kind, value, off in ((TopK, top_k, None), (TopP, top_p, 1.0), (MinP, min_p, 0.0)):
        if value != off:
            processor = kind(value)  # validate even when greedy makes it irrelevant
            if not greedy:
                processors.append(processor)
    return processors


def apply_processors(
    processors: Sequence[LogitsProcessor], history: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    """Run ``processors`` left to right over float32 logits (B, V)."""
    logits = logits.float()
    for processor in processors:
        logits = processor(history, logits)
    return logits


def choose_next(
    logits: torch.Tensor, greedy: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row (B, 1): the arg-max, or a draw from ``softmax(logits)``."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


# ---------------------------------------------------------------------------------------------
# generate: one batch of equal-length prompts, the model's own KV cache
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    *,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue each sequence of ``idx`` by ``max_new_tokens`` tokens.

    With the cache the prompt is read once and each new token costs one step over the cached keys
    and values. Prompts longer than ``block_size`` keep their last ``block_size`` tokens; when the
    cache is full it is refilled from the last ``block_size // 2`` tokens. ``use_cache=False``
    recomputes the same window from scratch at every step (the baseline the cache is measured
    against); both give the same tokens.

    Args:
        model: a :class:`minillm.model.GPT`.
        idx: prompt token ids, (batch, time).
        max_new_tokens: how many tokens to add.
        temperature: divides the logits; 0 means greedy (always the most likely token).
        top_k, top_p, min_p, repetition_penalty: see :func:`make_processors`.
        generator: a seeded ``torch.Generator`` makes the sampling repeatable.
        use_cache: reuse keys and values (True) or recompute the window every step.

    Returns:
        The prompt followed by the new tokens, (batch, time + max_new_tokens).
    """
    check_sampling_args(max_new_tokens, temperature, top_k)
    processors = make_processors(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
    )
    block = model.config.block_size
    context = idx[:, -block:] if isinstance(idx, torch.Tensor) and idx.dim() == 2 else idx
    model._check_ids(context)
    if max_new_tokens == 0:
        return idx
    was_training = model.training
    model.eval()
    try:
        # One buffer for prompt and output, filled in place: the history a processor sees is a
        # view of it, so each step costs the same however long the output already is
        # (concatenating the whole history every step made sampling quadratic in its length).
        start = idx.shape[1]
        out = idx.new_empty(idx.shape[0], start + max_new_tokens)
        out[:, :start] = idx
        steps = cached_steps(model, context) if use_cache else recomputed_steps(model, context)
        logits = next(steps)
        for step in range(max_new_tokens):
            scores = apply_processors(processors, out[:, : start + step], logits)
            next_id = choose_next(scores, temperature == 0, generator)  # (B, 1)
            out[:, start + step : start + step + 1] = next_id
            if step < max_new_tokens - 1:
                logits = steps.send(next_id)
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# Text: UTF-8-safe pieces and stop strings
# ---------------------------------------------------------------------------------------------


class TextStream:
    """Turns token ids into text pieces: never half a UTF-8 character, and cut at stop strings.

    ``push(id)`` returns the text that is now certain (it may be ""); text that could be the
    start of a stop string is held back until it is known not to be. Once a stop string appears,
    ``stopped`` is True and nothing after it is ever returned. ``finish()`` returns what is left.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = ()) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.stopped = False
        self.text = ""  # everything returned so far

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        return self._release(self._decoder.decode(self._token_bytes(token_id)))

    def finish(self) -> str:
        if self.stopped:
            return ""
        piece = self._release(self._decoder.decode(b"", final=True), final=True)
        return piece

    def _release(self, new_text: str, final: bool = False) -> str:
        text = self._pending + new_text
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            return self._emit(text[: min(hits)])
        hold = 0 if final else self._held_back(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return self._emit(text[: len(text) - hold])

    def _held_back(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        best = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if stop.startswith(text[-size:]):
                    best = size
                    break
        return best

    def _emit(self, piece: str) -> str:
        self.text += piece
        return piece


@torch.no_grad()
def stream_text(
    model: Any, tokenizer: Any, prompt: str, params: SamplingParams | None = None
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece (KV-cached, one sequence).

    Stops after ``params.max_tokens`` tokens, at a stop string, or when the context is full.
    """
    params = params or SamplingParams()
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    block = model.config.block_size
    if len(ids) >= block:
        raise ValueError(f"the prompt has {len(ids)} tokens; the context holds {block}")
    device = model.transformer.wte.weight.device
    cache = model.new_kv_cache(1)
    processors = make_processors(params)
    generator = params.generator(device)
    stream = TextStream(tokenizer.token_bytes, params.stop)
    history = torch.tensor([ids], device=device)
    logits = model._next_logits(history, cache)
    for _ in range(min(params.max_tokens, block - len(ids))):
        next_id = choose_next(
            apply_processors(processors, history, logits), params.greedy, generator
        )
        piece = stream.push(int(next_id))
        if piece:
            yield piece
        if stream.stopped or cache.length == block:
            break
        history = torch.cat([history, next_id], dim=1)
        logits = model._next_logits(next_id, cache)
    tail = stream.finish()
    if tail:
        yield tail
