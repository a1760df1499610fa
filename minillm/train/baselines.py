"""Baselines a language model has to beat: count models and general-purpose compressors.

Taught in lesson 05 (pretraining), and reported beside the course model in lesson 09
(evaluation). Two families:

* **Count models** over the same token ids the GPT reads: :class:`UnigramModel`
  (``p(b)``, add-k smoothed) and :class:`BigramModel` (``p(b | a)``, add-alpha smoothed,
  optionally interpolated with the unigram). Both are ``torch.nn.Module``\\ s with the GPT's
  scoring interface: ``model(idx)`` on a ``(B, T)`` tensor of ids returns ``(logits, loss)``
  with logits of shape ``(B, T, V)`` (log-probabilities, which are valid logits) and they have
  ``config.block_size``, so :mod:`minillm.evaluate.metrics` and :func:`minillm.evaluate.evaluate` score
  them unchanged. ``nll(tokens)`` gives the mean nats per token of an id array directly, in
  float64.
* **Compressors** (:func:`compressor_bits_per_byte`): gzip, bz2 and xz at their strongest
  settings, on the text alone or conditioned on the training text. A compressor run on the
  validation text alone has to learn the language inside that one file and pays for it in the
  output; conditioned (``len(C(train + val)) - len(C(train))``) it gets the training text
  first, as a language model does. How much of that context it can use is bounded by its
  design: gzip (DEFLATE) only looks 32 KB back, bz2 compresses 900 KB blocks independently,
  xz at preset 9 keeps a 64 MB dictionary and so can use all of our training text.

:func:`baseline_report` puts them all side by side for a prepared data folder
(:mod:`minillm.train.shards`), in nats per token and bits per byte. Bits per byte are computed as
in lesson 05's evaluation of the GPT: ``mean nats per token / ln 2 / (bytes per token)`` with
the split's bytes and tokens from ``meta.json``, so the numbers compare directly.

The default smoothing comes from a sweep on the course validation split (vocabulary 2048,
1.6 M training tokens; :func:`bigram_sweep` reruns it): the unigram is insensitive to k
(6.488 nats/token for k in 0.01..1, k = 1 kept); for the bigram, add-alpha with alpha = 0.05
is the best pure add-alpha point (4.844 nats/token, 2.368 bits per byte; alpha = 0.01 gives
4.917, alpha = 1 gives 5.253), and mixing in 5% of the unigram at alpha = 0.03 gains only
0.02 nats (4.823), so interpolation is available (``unigram_weight``) but off by default.
Choosing one number on the validation split flatters it very slightly; the test split is
there for a clean figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN2 = math.log(2.0)
DEFAULT_UNIGRAM_K = 1.0
DEFAULT_BIGRAM_ALPHA = 0.05
DEFAULT_BLOCK_SIZE = 256
MAX_TABLE_BYTES = 1 << 30  # a dense float32 V x V table above 1 GiB is refused

# =============================================================================================
# Count models
# =============================================================================================


def _as_ids(tokens: Any, vocab_size: int, name: str = "tokens") -> np.ndarray:
    """A 1-D int64 array of ids, checked to lie in ``[0, vocab_size)``."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    ids = np.asarray(tokens)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"{name} hold ids from {ids.min()} to {ids.max()}; allowed: 0 .. {vocab_size - 1} "
            f"(vocab_size={vocab_size})"
        )
    return ids


def _check_vocab_size(vocab_size: Any) -> int:
    if not isinstance(vocab_size, Integral) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    return int(vocab_size)


def _check_smoothing(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CountModelConfig:
    """What the scoring code reads from a model: its vocabulary and longest input."""

    vocab_size: int
    block_size: int = DEFAULT_BLOCK_SIZE


class _CountModel(nn.Module):
    """A fixed table of log-probabilities behind the GPT's ``forward(idx, targets)``."""

    def __init__(self, vocab_size: int, block_size: int) -> None:
        super().__init__()
        if not isinstance(block_size, Integral) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        self.config = CountModelConfig(_check_vocab_size(vocab_size), int(block_size))

    def _set_table(self, log_probs: torch.Tensor) -> None:
        # A frozen Parameter, so .to(device) moves it and the harness finds its device.
        self.log_probs = nn.Parameter(log_probs.float(), requires_grad=False)

    def _lookup(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probabilities of the next token at every position, as logits (B, T, V).

        Args:
            idx: (B, T) token ids.
            targets: optional (B, T) next-token ids; the mean cross-entropy is returned with them.

        Returns:
            ``(logits, loss)`` like :class:`minillm.model.GPT` (``loss`` is None without targets).
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.is_floating_point():
            raise TypeError(f"idx must be a (batch, time) integer tensor, got {idx!r:.80}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(
                f"idx holds ids outside 0 .. {self.config.vocab_size - 1} (the vocabulary)"
            )
        logits = self._lookup(idx.to(self.log_probs.device))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.to(logits.device).flatten())
        return logits, loss

    def token_nlls(self, tokens: Any) -> np.ndarray:
        """``-log p(tokens[t] | tokens[t-1])`` for ``t = 1 .. n-1``, in float64 nats."""
        raise NotImplementedError

    def nll(self, tokens: Any) -> float:
        """Mean negative log-likelihood (nats per token) of ``tokens[1:]``, each given the one
        before it: the number the GPT's training loss reports on the same ids."""
        nlls = self.token_nlls(tokens)
        return float(nlls.mean())

    def num_params(self) -> int:
        """Numbers in the table (a bigram over V ids has V * V of them)."""
        return self.log_probs.numel()


class UnigramModel(_CountModel):
    """``p(b) = (count(b) + k) / (N + k V)``: token frequencies, no context at all.

    Build one with :meth:`fit`. Every position gets the same distribution, so it is the
    baseline that measures how much a model gains from context.
    """

    def __init__(
        self,
        counts: np.ndarray,
        *,
        k: float = DEFAULT_UNIGRAM_K,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
            raise ValueError("counts must be a non-empty 1-D array of non-negative counts")
        super().__init__(counts.size, block_size)
        self.counts = counts
        self.k = _check_smoothing("k", k)
        self._set_table(torch.from_numpy(np.log(self.probs())))

    @classmethod
    def fit(
        cls,
        tokens: Any,
        vocab_size: int,
        *,
        k: float = DEFAULT_UNIGRAM_K,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> UnigramModel:
        """Count the ids of ``tokens`` (a 1-D array, for example ``train.bin``).

        Args:
            tokens: training token ids.
            vocab_size: size of the vocabulary (ids are ``0 .. vocab_size - 1``).
            k: add-k smoothing, > 0 so that unseen ids keep a probability.
            block_size: the ``config.block_size`` reported to the scoring code; any value gives
                the same scores (the model ignores context), larger ones use more memory.
        """
        vocab_size = _check_vocab_size(vocab_size)
        ids = _as_ids(tokens, vocab_size)
        if ids.size == 0:
            raise ValueError("need at least one training token to count")
        return cls(np.bincount(ids, minlength=vocab_size), k=k, block_size=block_size)

    def probs(self) -> np.ndarray:
        """The smoothed distribution over the vocabulary (float64, sums to 1)."""
        v = self.counts.size
        return (self.counts + self.k) / (self.counts.sum() + self.k * v)

    def _lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return self.log_probs.expand(*idx.shape, self.config.vocab_size)

    def token_nlls(self, tokens: Any) -> np.ndarray:
        ids = _as_ids(tokens, self.config.vocab_size)
        if ids.size < 2:
            raise ValueError(f"need at least 2 token ids to score, got {ids.size}")
        return -np.log(self.probs()[ids[1:]])


class BigramModel(_CountModel):
    """``p(b | a)``: how often ``b`` followed ``a`` in the training ids, smoothed.

    With add-alpha smoothing and an optional share ``w`` of the unigram:

    ``p(b | a) = (1 - w) (count(a, b) + alpha) / (count(a) + alpha V) + w p_unigram(b)``

    where ``count(a)`` is the number of pairs that start with ``a`` (with ``alpha = 0``, a
    context never seen in training backs off to the unigram alone). Build one with
    :meth:`fit`; the defaults come from the sweep in the module docstring.
    """

    def __init__(
        self,
        pair_keys: np.ndarray,
        pair_counts: np.ndarray,
        unigram: UnigramModel,
        *,
        alpha: float = DEFAULT_BIGRAM_ALPHA,
        unigram_weight: float = 0.0,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        vocab_size = unigram.counts.size
        super().__init__(vocab_size, block_size)
        self.alpha = _check_smoothing("alpha", alpha, allow_zero=True)
        self.unigram_weight = _check_smoothing("unigram_weight", unigram_weight, allow_zero=True)
        if self.unigram_weight > 1:
            raise ValueError(f"unigram_weight must be in [0, 1], got {unigram_weight!r}")
        if self.alpha == 0 and self.unigram_weight == 0:
            raise ValueError(
                "alpha=0 with unigram_weight=0 gives unseen pairs probability 0 (infinite loss); "
                "use alpha > 0 or unigram_weight > 0"
            )
        if vocab_size * vocab_size * 4 > MAX_TABLE_BYTES:
            raise ValueError(
                f"a bigram table over {vocab_size} ids needs {vocab_size**2 * 4 / 2**30:.1f} GiB "
                f"(more than {MAX_TABLE_BYTES / 2**30:.0f} GiB); use a smaller vocabulary"
            )
        if np.size(pair_keys) == 0 or np.size(pair_keys) != np.size(pair_counts):
            raise ValueError("pair_keys and pair_counts must be non-empty and of equal length")
        # Sparse counts (sorted keys a * V + b): exact float64 scoring without a dense table.
        self.pair_keys = np.asarray(pair_keys, dtype=np.int64)
        self.pair_counts = np.asarray(pair_counts, dtype=np.int64)
        self.row_counts = np.bincount(
            self.pair_keys // vocab_size, weights=self.pair_counts, minlength=vocab_size
        ).astype(np.int64)
        self.unigram_probs = unigram.probs()  # an array, not a submodule: one table per model
        self._set_table(self._dense_log_table(vocab_size))

    @classmethod
    def fit(
        cls,
        tokens: Any,
        vocab_size: int,
        *,
        alpha: float = DEFAULT_BIGRAM_ALPHA,
        unigram_weight: float = 0.0,
        k: float = DEFAULT_UNIGRAM_K,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> BigramModel:
        """Count the adjacent pairs of ``tokens`` (a 1-D array, for example ``train.bin``).

        Args:
            tokens: training token ids, at least two.
            vocab_size: size of the vocabulary.
            alpha: add-alpha smoothing of each row (>= 0; 0 only with ``unigram_weight`` > 0).
            unigram_weight: share of the unigram mixed in, in [0, 1] (0: pure add-alpha).
            k: add-k smoothing of that unigram.
            block_size: ``config.block_size`` for the scoring code; the scores do not depend on
                it (one token of context is all a bigram uses), memory does.
        """
        vocab_size = _check_vocab_size(vocab_size)
        ids = _as_ids(tokens, vocab_size)
        if ids.size < 2:
            raise ValueError(f"need at least 2 training tokens to count pairs, got {ids.size}")
        keys, counts = np.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)
        unigram = UnigramModel.fit(ids, vocab_size, k=k, block_size=block_size)
        return cls(
            keys,
            counts,
            unigram,
            alpha=alpha,
            unigram_weight=unigram_weight,
            block_size=block_size,
        )

    def _pair_count(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """count(prev, nxt) for arrays of ids, looked up in the sorted sparse keys."""
        keys = prev * self.config.vocab_size + nxt
        where = np.minimum(np.searchsorted(self.pair_keys, keys), self.pair_keys.size - 1)
        return np.where(self.pair_keys[where] == keys, self.pair_counts[where], 0)

    def prob(self, prev: Any, nxt: Any) -> np.ndarray:
        """``p(nxt | prev)`` for arrays of ids, in float64, from the counts (no dense table)."""
        v = self.config.vocab_size
        prev, nxt = _as_ids(np.atleast_1d(prev), v), _as_ids(np.atleast_1d(nxt), v)
        return _mix(
            self._pair_count(prev, nxt),
            self.row_counts[prev],
            self.unigram_probs[nxt],
            self.alpha,
            self.unigram_weight,
            v,
        )

    def _dense_log_table(self, v: int, rows_per_chunk: int = 256) -> torch.Tensor:
        """log p(b | a) for every (a, b), built a few rows at a time to bound float64 memory."""
        table = torch.empty(v, v, dtype=torch.float32)
        uni = self.unigram_probs
        rows = self.pair_keys // v
        for start in range(0, v, rows_per_chunk):
            stop = min(start + rows_per_chunk, v)
            chunk = np.zeros((stop - start, v), dtype=np.float64)
            inside = (rows >= start) & (rows < stop)
            chunk[rows[inside] - start, self.pair_keys[inside] % v] = self.pair_counts[inside]
            starts = self.row_counts[start:stop, None]
            chunk = _mix(chunk, starts, uni[None, :], self.alpha, self.unigram_weight, v)
            table[start:stop] = torch.from_numpy(np.log(chunk))
        return table

    def _lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return self.log_probs[idx]  # row a holds log p(. | a): (B, T, V)

    def token_nlls(self, tokens: Any) -> np.ndarray:
        ids = _as_ids(tokens, self.config.vocab_size)
        if ids.size < 2:
            raise ValueError(f"need at least 2 token ids to score, got {ids.size}")
        return -np.log(self.prob(ids[:-1], ids[1:]))


def _mix(
    pair: np.ndarray, start: np.ndarray, uni: np.ndarray, alpha: float, w: float, v: int
) -> np.ndarray:
    """(1 - w) (pair + alpha) / (start + alpha V) + w uni, with a context never seen and no
    smoothing (start = alpha = 0) backing off to the unigram alone."""
    denom = start + alpha * v
    seen = denom > 0
    counted = np.where(seen, (pair + alpha) / np.where(seen, denom, 1.0), uni)
    return (1 - w) * counted + w * uni


def bigram_sweep(
    train_tokens: Any,
    val_tokens: Any,
    vocab_size: int,
    *,
    alphas: Sequence[float] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    unigram_weights: Sequence[float] = (0.0, 0.05, 0.1, 0.2),
) -> list[dict[str, float]]:
    """Validation nats per token of the bigram for every (alpha, unigram_weight) pair.

    The counts are taken once; each point is scored from them exactly. Pairs that are not a
    valid model (alpha = 0 with no unigram) are skipped.
    """
    base = BigramModel.fit(train_tokens, vocab_size, alpha=1.0)
    val = _as_ids(val_tokens, vocab_size, "val_tokens")
    if val.size < 2:
        raise ValueError(f"need at least 2 validation tokens, got {val.size}")
    counts = base._pair_count(val[:-1], val[1:])
    rows_total = base.row_counts[val[:-1]]
    uni = base.unigram_probs[val[1:]]
    results = []
    for alpha in alphas:
        for w in unigram_weights:
            if alpha == 0 and w == 0:
                continue
            p = _mix(counts, rows_total, uni, alpha, w, vocab_size)
            results.append(
                {"alpha": float(alpha), "unigram_weight": float(w), "nll": float(-np.log(p).mean())}
            )
    return results


# =============================================================================================
# Compressors
# =============================================================================================


# =============================================================================================
# Everything on a prepared data folder
# =============================================================================================
