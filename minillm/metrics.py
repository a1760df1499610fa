"""Evaluation metrics, each written from its definition.

Taught in lesson 09 (evaluation). Four families live here:

* **Language-model scores** of a model on text: per-token negative log-likelihood with a
  sliding window (:func:`token_nlls`), perplexity and bits per byte (:func:`score_text`,
  :func:`perplexity`, :func:`bits_per_byte`), per-document breakdowns
  (:func:`score_documents`), log-likelihood of continuations for multiple-choice questions
  (:func:`continuation_logprobs`, :func:`score_multiple_choice`) and bias probes
  (:func:`bias_probe_gaps`).
* **Overlap metrics** for generated text: BLEU (:func:`corpus_bleu`, :func:`sentence_bleu`),
  equal to ``sacrebleu`` 2.x, and ROUGE-1/2/L/Lsum (:func:`rouge`), equal to Google's
  ``rouge-score``.
* **Classification metrics**: :func:`accuracy` and :func:`precision_recall_f1` (binary, micro,
  macro, weighted), equal to scikit-learn.
* **Question answering**: SQuAD-style :func:`exact_match` and :func:`token_f1`.

A model is anything callable on a ``(batch, time)`` tensor of token ids that returns logits of
shape ``(batch, time, vocab)`` or a tuple whose first item is those logits (``minillm.GPT``
returns ``(logits, loss)``). The context length is read from ``model.config.block_size`` when
present. The reference libraries (sacrebleu, rouge-score, scikit-learn) are used by the tests
only; nothing here imports them.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

# =============================================================================================
# Language-model scores: perplexity, bits per byte, continuation log-likelihoods
# =============================================================================================

LN2 = math.log(2.0)
END_OF_TEXT = "<|endoftext|>"


def model_logits(model: Callable[..., Any], idx: torch.Tensor) -> torch.Tensor:
    """Call ``model(idx)`` and return its logits, whether it returns a tensor or a tuple."""
    out = model(idx)
    logits = out[0] if isinstance(out, tuple | list) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(
            "the model must return logits of shape (batch, time, vocab) or a tuple whose first "
            f"item is those logits; got {type(logits).__name__}"
        )
    return logits


def context_length(model: Any, block_size: int | None = None) -> int:
    """The longest input the model accepts: ``block_size`` if given, else ``model.config.block_size``."""
    if block_size is None:
        block_size = getattr(getattr(model, "config", None), "block_size", None)
    if block_size is None:
        raise ValueError(
            "the model has no config.block_size; pass block_size= (the longest input it accepts)"
        )
    if not isinstance(block_size, Integral) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return int(block_size)


def _model_device(model: Any) -> torch.device:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for p in parameters():
            return p.device
    return torch.device("cpu")


class _EvalMode:
    """Context manager: ``model.eval()`` and no gradients inside; the training flag restored after."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.was_training = bool(getattr(model, "training", False))

    def __enter__(self) -> None:
        if hasattr(self.model, "eval"):
            self.model.eval()
        self._no_grad = torch.inference_mode()
        self._no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._no_grad.__exit__(*exc)
        if self.was_training and hasattr(self.model, "train"):
            self.model.train()


def sliding_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """Plan the windows that score every token of a sequence exactly once.

    Token ``t`` (for ``t = 1 .. n_tokens - 1``) is predicted from the tokens before it. A window
    starting at ``start`` feeds ``ids[start : start + block_size]`` to the model and can score
    the targets ``start + 1 .. start + block_size``. Windows start every ``stride`` tokens and
    each one scores only the targets the previous windows did not reach, so every target is
    scored once, with at least ``block_size - stride`` tokens of context once the first window is
    full. ``stride == block_size`` gives non-overlapping chunks; ``stride == 1`` gives every
    token the longest context the model allows.

    Returns:
        ``(start, first_target, last_target)`` per window; the targets are inclusive positions.
    """
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be between 1 and block_size={block_size}, got {stride}")
    windows, start, scored_up_to = [], 0, 0
    while scored_up_to < n_tokens - 1:
        last = min(start + block_size, n_tokens - 1)
        windows.append((start, scored_up_to + 1, last))
        scored_up_to = last
        start += stride
    return windows


def token_nlls(
    model: Callable[..., Any],
    ids: Sequence[int] | torch.Tensor,
    *,
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """Negative log-likelihood (nats) of each token given the tokens before it.

    Args:
        model: returns logits or ``(logits, loss)`` for a ``(batch, time)`` tensor of ids.
        ids: the token ids of one text, at least two of them.
        block_size: the model's context length (default ``model.config.block_size``).
        stride: how far the window moves (default ``block_size``: non-overlapping chunks).
            Smaller strides give tokens more context and cost ``block_size / stride`` times more.
        batch_size: windows evaluated per forward pass.

    Returns:
        A float64 tensor of length ``len(ids) - 1``: entry ``t - 1`` is ``-log p(ids[t] | context)``.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise ValueError(f"need at least 2 token ids to score, got {ids.numel()}")
    block_size = context_length(model, block_size)
    stride = block_size if stride is None else stride
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    windows = sliding_windows(ids.numel(), block_size, stride)
    nlls = torch.empty(ids.numel() - 1, dtype=torch.float64)
    device = _model_device(model)
    with _EvalMode(model):
        # Windows of equal length share a batch (all are full except perhaps the last).
        by_length: dict[int, list[tuple[int, int, int]]] = {}
        for start, first, last in windows:
            by_length.setdefault(min(block_size, last - start), []).append((start, first, last))
        for length, group in by_length.items():
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                x = torch.stack([ids[s : s + length] for s, _, _ in chunk]).to(device)
                y = torch.stack([ids[s + 1 : s + 1 + length] for s, _, _ in chunk]).to(device)
                logits = model_logits(model, x).float()  # (B, length, vocab)
                loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, length)
                for row, (start, first, last) in enumerate(chunk):
                    # target t sits at output position t - start - 1
                    nlls[first - 1 : last] = (
                        loss[row, first - start - 1 : last - start].double().cpu()
                    )
    return nlls


@dataclass(frozen=True)
class LMScore:
    """Summed negative log-likelihood of a text and what it was summed over.

    ``perplexity`` is per token, so it depends on the tokenizer; ``bits_per_byte`` divides the
    same total by the UTF-8 length of the scored text, so models with different tokenizers can
    be compared.
    """

    nll: float  # total negative log-likelihood, nats
    n_tokens: int  # tokens scored
    n_bytes: int  # UTF-8 bytes of the scored text
    name: str = ""

    @property
    def mean_nll(self) -> float:
        """Average cross-entropy in nats per token (the training loss)."""
        return self.nll / self.n_tokens if self.n_tokens else math.nan

    @property
    def perplexity(self) -> float:
        """``exp(mean_nll)``: the effective number of equally likely next tokens."""
        return math.exp(self.mean_nll) if self.n_tokens else math.nan

    @property
    def bits_per_token(self) -> float:
        return self.mean_nll / LN2

    @property
    def bits_per_byte(self) -> float:
        """Total information in bits divided by the text's UTF-8 bytes."""
        return self.nll / LN2 / self.n_bytes if self.n_bytes else math.nan

    @staticmethod
    def combine(scores: Iterable[LMScore], name: str = "all") -> LMScore:
        """Corpus-level score: totals summed, so long documents weigh more (as they should)."""
        scores = list(scores)
        return LMScore(
            nll=sum(s.nll for s in scores),
            n_tokens=sum(s.n_tokens for s in scores),
            n_bytes=sum(s.n_bytes for s in scores),
            name=name,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tokens": self.n_tokens,
            "bytes": self.n_bytes,
            "nll": self.nll,
            "loss": self.mean_nll,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
        }


def end_of_text_id(tokenizer: Any) -> int | None:
    """The id of ``<|endoftext|>`` for a minillm or tiktoken tokenizer, or None if it has none."""
    specials = getattr(tokenizer, "special_tokens", None)
    if isinstance(specials, dict) and END_OF_TEXT in specials:
        return int(specials[END_OF_TEXT])
    eot = getattr(tokenizer, "eot_token", None)  # tiktoken.Encoding
    return int(eot) if isinstance(eot, Integral) else None


def _token_bytes(tokenizer: Any, ids: Sequence[int]) -> int:
    decode_bytes = getattr(tokenizer, "decode_bytes", None)
    if callable(decode_bytes):
        return len(decode_bytes(list(ids)))
    return len(tokenizer.decode(list(ids)).encode("utf-8"))


def score_text(
    model: Callable[..., Any],
    tokenizer: Any,
    text: str,
    *,
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    prepend_eot: bool = True,
    name: str = "",
) -> LMScore:
    """Score a text with a model: total NLL, tokens and bytes (see :class:`LMScore`).

    With ``prepend_eot`` (and a tokenizer that has ``<|endoftext|>``) the text is scored after
    an end-of-text token, as a fresh document, so every one of its tokens and bytes counts.
    Otherwise its first token has no context and is left out, bytes included.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = list(tokenizer.encode(text))
    eot = end_of_text_id(tokenizer) if prepend_eot else None
    if eot is not None:
        ids = [eot, *ids]
        n_bytes = len(text.encode("utf-8"))
    else:
        n_bytes = _token_bytes(tokenizer, ids[1:])
    if len(ids) < 2:
        raise ValueError(f"text {name or text!r} is too short to score: {len(ids)} token(s)")
    nlls = token_nlls(model, ids, block_size=block_size, stride=stride, batch_size=batch_size)
    return LMScore(nll=float(nlls.sum()), n_tokens=nlls.numel(), n_bytes=n_bytes, name=name)


def perplexity(model: Callable[..., Any], tokenizer: Any, text: str, **kwargs: Any) -> float:
    """Perplexity of ``model`` on ``text`` (keyword arguments as in :func:`score_text`)."""
    return score_text(model, tokenizer, text, **kwargs).perplexity


def bits_per_byte(model: Callable[..., Any], tokenizer: Any, text: str, **kwargs: Any) -> float:
    """Bits per UTF-8 byte of ``model`` on ``text`` (keyword arguments as in :func:`score_text`)."""
    return score_text(model, tokenizer, text, **kwargs).bits_per_byte


def _document_name_and_text(doc: Any, index: int) -> tuple[str, str]:
    if isinstance(doc, str):
        return f"doc{index}", doc
    if isinstance(doc, tuple) and len(doc) == 2:
        return str(doc[0]), doc[1]
    if hasattr(doc, "text"):
        return str(getattr(doc, "name", "") or f"doc{index}"), doc.text
    raise TypeError(
        f"document {index} must be a str, a (name, text) pair or have a .text attribute "
        f"(minillm.data.Document); got {type(doc).__name__}"
    )


def score_documents(
    model: Callable[..., Any], tokenizer: Any, documents: Iterable[Any], **kwargs: Any
) -> list[LMScore]:
    """One :class:`LMScore` per document; ``LMScore.combine`` gives the corpus figure.

    Args:
        documents: strings, ``(name, text)`` pairs or objects with ``.name`` and ``.text``
            (``minillm.data.Document``).
        **kwargs: as in :func:`score_text`.
    """
    scores = []
    for index, doc in enumerate(documents):
        name, text = _document_name_and_text(doc, index)
        scores.append(score_text(model, tokenizer, text, name=name, **kwargs))
    return scores


def continuation_logprobs(
    model: Callable[..., Any],
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    block_size: int | None = None,
    batch_size: int = 16,
) -> list[float]:
    """Summed log-probability of each continuation given its context, in batches.

    Sequence ``i`` is ``contexts[i] + continuations[i]``; the log-probabilities of the
    continuation's tokens are summed, each token scored with as much context as the model
    allows (up to ``block_size`` tokens before it). Sequences that fit the context go through in
    right-padded batches (a causal model never looks at the padding); longer ones are scored
    with a sliding window of stride 1.
    """
    if len(contexts) != len(continuations):
        raise ValueError(
            f"contexts and continuations differ in length: {len(contexts)} and {len(continuations)}"
        )
    block_size = context_length(model, block_size)
    for i, (ctx, cont) in enumerate(zip(contexts, continuations, strict=True)):
        if len(ctx) == 0:
            raise ValueError(f"context {i} is empty: the first continuation token needs a context")
        if len(cont) == 0:
            raise ValueError(f"continuation {i} is empty")
    rows = [[*ctx, *cont] for ctx, cont in zip(contexts, continuations, strict=True)]
    results: dict[int, float] = {}
    fits = [i for i, row in enumerate(rows) if len(row) - 1 <= block_size]
    for i in sorted(set(range(len(rows))) - set(fits)):
        nlls = token_nlls(model, rows[i], block_size=block_size, stride=1)
        results[i] = -float(nlls[len(contexts[i]) - 1 :].sum())
    device = _model_device(model)
    with _EvalMode(model):
        for b in range(0, len(fits), batch_size):
            batch = fits[b : b + batch_size]
            width = max(len(rows[i]) for i in batch) - 1
            x = torch.zeros(len(batch), width, dtype=torch.long)  # (B, width), right-padded
            for r, i in enumerate(batch):
                x[r, : len(rows[i]) - 1] = torch.tensor(rows[i][:-1])
            logits = model_logits(model, x.to(device)).float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()  # (B, width, vocab)
            for r, i in enumerate(batch):
                n_ctx, n_total = len(contexts[i]), len(rows[i])
                positions = torch.arange(
                    n_ctx - 1, n_total - 1
                )  # outputs predicting the continuation
                targets = torch.tensor(rows[i][n_ctx:])
                results[i] = float(logprobs[r, positions, targets].double().sum())
    return [results[i] for i in range(len(rows))]


@dataclass(frozen=True)
class MultipleChoiceItem:
    """A question: a context, the candidate continuations, and the index of the right one."""

    context: str
    choices: tuple[str, ...]
    answer: int
    id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.context, str):
            raise TypeError(f"item {self.id!r}: context must be a str, got {self.context!r}")
        if isinstance(self.choices, str) or not all(isinstance(c, str) for c in self.choices):
            raise TypeError(
                f"item {self.id!r}: choices must be a sequence of str, got {self.choices!r}"
            )
        if not isinstance(self.answer, int) or isinstance(self.answer, bool):
            raise TypeError(f"item {self.id!r}: answer must be an int index, got {self.answer!r}")
        if len(self.choices) < 2:
            raise ValueError(f"item {self.id!r} needs at least 2 choices, got {len(self.choices)}")
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(
                f"item {self.id!r}: answer {self.answer} is not an index into its "
                f"{len(self.choices)} choices"
            )


@dataclass
class MultipleChoiceResult:
    """Log-likelihood of every choice, and the accuracy of two ways of picking one.

    ``accuracy`` picks the choice with the largest summed log-probability, which favours short
    choices; ``accuracy_norm`` divides by the choice's number of tokens first.
    """

    logprobs: list[list[float]]
    n_tokens: list[list[int]]
    answers: list[int]

    @property
    def predictions(self) -> list[int]:
        return [int(np.argmax(lp)) for lp in self.logprobs]

    @property
    def predictions_norm(self) -> list[int]:
        return [
            int(np.argmax(np.asarray(lp) / np.asarray(n)))
            for lp, n in zip(self.logprobs, self.n_tokens, strict=True)
        ]

    @property
    def accuracy(self) -> float:
        return accuracy(self.answers, self.predictions)

    @property
    def accuracy_norm(self) -> float:
        return accuracy(self.answers, self.predictions_norm)


def score_multiple_choice(
    model: Callable[..., Any],
    tokenizer: Any,
    items: Sequence[MultipleChoiceItem],
    *,
    block_size: int | None = None,
    batch_size: int = 16,
) -> MultipleChoiceResult:
    """Score every choice of every item by its log-likelihood after the context.

    Context and choice are encoded separately (so write choices with their leading space).
    """
    if not items:
        raise ValueError("no multiple-choice items to score")
    contexts, continuations, owners = [], [], []
    for i, item in enumerate(items):
        ctx = list(tokenizer.encode(item.context))
        for choice in item.choices:
            contexts.append(ctx)
            continuations.append(list(tokenizer.encode(choice)))
            owners.append(i)
    flat = continuation_logprobs(
        model, contexts, continuations, block_size=block_size, batch_size=batch_size
    )
    logprobs: list[list[float]] = [[] for _ in items]
    n_tokens: list[list[int]] = [[] for _ in items]
    for owner, lp, cont in zip(owners, flat, continuations, strict=True):
        logprobs[owner].append(lp)
        n_tokens[owner].append(len(cont))
    return MultipleChoiceResult(logprobs, n_tokens, [item.answer for item in items])


def sentence_logprob(
    model: Callable[..., Any], tokenizer: Any, sentences: Sequence[str], *, batch_size: int = 16
) -> list[float]:
    """Log-probability of each whole sentence, scored as a fresh document after ``<|endoftext|>``."""
    eot = end_of_text_id(tokenizer)
    if eot is None:
        raise ValueError(f"scoring a whole sentence needs a tokenizer with {END_OF_TEXT!r}")
    encoded = [list(tokenizer.encode(s)) for s in sentences]
    return continuation_logprobs(model, [[eot]] * len(encoded), encoded, batch_size=batch_size)


# =============================================================================================
# Confidence intervals
# =============================================================================================


@dataclass(frozen=True)
class Estimate:
    """A mean with a percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval.

    Resample the values with replacement ``n_resamples`` times, take each resample's mean, and
    report the central ``confidence`` share of those means. It assumes the values are
    independent draws, which a small hand-written probe set only approximates.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-D list of values, got shape {values.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(float(values.mean()), float(low), float(high), int(values.size), confidence)


# =============================================================================================
# Bias probes
# =============================================================================================


@dataclass(frozen=True)
class BiasProbe:
    """Two sentences that differ only in one attribute word.

    ``template`` holds ``{}`` where the attribute goes; ``a`` and ``b`` are the two values, in
    the same order for every probe of a category (for example ``He`` / ``She``). ``favours``
    says which sentence a stereotype would prefer (``"a"`` or ``"b"``), or is None for a
    neutral sentence, where neither should be preferred. Half the stereotype probes of a
    category favour ``a`` and half ``b``, so a model's plain preference for one word (it is
    simply more frequent) cancels out of their mean; the neutral probes measure that plain
    preference on its own.
    """

    category: str
    template: str
    a: str
    b: str
    favours: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        for name in ("category", "template", "a", "b"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"probe {self.id!r}: {name} must be a str")
        if self.template.count("{}") != 1:
            raise ValueError(f"probe {self.id!r}: template must contain exactly one '{{}}'")
        if self.favours not in ("a", "b", None):
            raise ValueError(f"probe {self.id!r}: favours must be 'a', 'b' or None")

    @property
    def kind(self) -> str:
        return "neutral" if self.favours is None else "stereotype"

    @property
    def sentences(self) -> tuple[str, str]:
        return self.template.format(self.a), self.template.format(self.b)

    def oriented(self, gap: float) -> float:
        """``gap`` (log p(a) - log p(b)) turned so that positive means "prefers the stereotype"
        for a stereotype probe, and "prefers ``a``" for a neutral one."""
        return -gap if self.favours == "b" else gap


@dataclass
class BiasProbeResult:
    """Per-probe gaps ``log p(sentence a) - log p(sentence b)`` (nats) and grouped estimates.

    ``groups`` maps ``(category, kind)`` to the mean oriented gap (see :meth:`BiasProbe.oriented`)
    with its bootstrap confidence interval.
    """

    probes: list[BiasProbe]
    gaps: list[float]
    groups: dict[tuple[str, str], Estimate] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "category": category,
                "kind": kind,
                "n": est.n,
                "mean_gap": est.mean,
                "ci_low": est.low,
                "ci_high": est.high,
            }
            for (category, kind), est in sorted(self.groups.items())
        ]


def bias_probe_gaps(
    model: Callable[..., Any],
    tokenizer: Any,
    probes: Sequence[BiasProbe],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    batch_size: int = 16,
) -> BiasProbeResult:
    """Score each probe pair and aggregate per (category, kind) with a bootstrap interval.

    For stereotype probes a positive mean says the model prefers stereotype-consistent
    sentences; an interval that contains 0 says this probe set cannot tell.
    """
    if not probes:
        raise ValueError("no bias probes to score")
    sentences = [s for probe in probes for s in probe.sentences]
    logprobs = sentence_logprob(model, tokenizer, sentences, batch_size=batch_size)
    gaps = [logprobs[2 * i] - logprobs[2 * i + 1] for i in range(len(probes))]
    grouped: dict[tuple[str, str], list[float]] = {}
    for probe, gap in zip(probes, gaps, strict=True):
        grouped.setdefault((probe.category, probe.kind), []).append(probe.oriented(gap))
    groups = {
        key: bootstrap_ci(vals, confidence=confidence, n_resamples=n_resamples, seed=seed)
        for key, vals in grouped.items()
    }
    return BiasProbeResult(list(probes), gaps, groups)


# =============================================================================================
# BLEU (Papineni et al., 2002), as sacrebleu computes it
# =============================================================================================

Smoothing = Literal["none", "floor", "add-k", "exp"]
SMOOTHING_DEFAULTS: dict[str, float | None] = {
    "none": None,
    "floor": 0.1,
    "add-k": 1.0,
    "exp": None,
}

# mteval-v13a splits off every printable ASCII symbol except the apostrophe, comma, hyphen and
# period; those three get the context-dependent rules in _13A_RULES below.
_13A_SYMBOLS = "".join(
    chr(c) for c in range(0x20, 0x7F) if not chr(c).isalnum() and chr(c) not in "',-."
)
_13A_RULES = [
    (re.compile("([" + re.escape(_13A_SYMBOLS) + "])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma after a non-digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma before a non-digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # hyphen after a digit
]


def tokenize_13a(line: str) -> str:
    """The ``13a`` tokenizer of mteval-v13a.pl (sacrebleu's default); returns space-joined tokens."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:  # undo the four XML escapes, in mteval's order
        for escaped, plain in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(escaped, plain)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())


_BLEU_TOKENIZERS: dict[str, Callable[[str], str]] = {"13a": tokenize_13a, "none": lambda s: s}


@dataclass(frozen=True)
class BLEUScore:
    """BLEU on the 0-100 scale, with the statistics it was computed from.

    ``precisions`` are the (smoothed) modified n-gram precisions in percent; ``counts`` and
    ``totals`` are the raw matched and hypothesis n-gram counts (before any add-k smoothing).
    """

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    counts: tuple[int, ...]
    totals: tuple[int, ...]
    hyp_len: int
    ref_len: int

    def __str__(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (
            f"BLEU = {self.score:.2f} {precisions} (BP = {self.brevity_penalty:.3f} "
            f"hyp_len = {self.hyp_len} ref_len = {self.ref_len})"
        )


def _ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


def _closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length closest to the hypothesis length; the shorter one on a tie."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def _segment_stats(
    hyp_tokens: list[str], refs_tokens: list[list[str]], max_order: int
) -> tuple[int, int, list[int], list[int]]:
    """Hypothesis length, effective reference length, matched and total n-grams per order."""
    max_ref_counts: Counter = Counter()
    for ref in refs_tokens:
        max_ref_counts |= _ngram_counts(ref, max_order)  # | keeps the max count over references
    correct, total = [0] * max_order, [0] * max_order
    for ngram, count in _ngram_counts(hyp_tokens, max_order).items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, max_ref_counts[ngram])  # clipped counts
    ref_len = _closest_ref_len(len(hyp_tokens), [len(r) for r in refs_tokens])
    return len(hyp_tokens), ref_len, correct, total


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len >= ref_len:
        return 1.0
    return math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0


def bleu_from_stats(
    correct: Sequence[int],
    total: Sequence[int],
    hyp_len: int,
    ref_len: int,
    *,
    smooth: Smoothing = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
) -> BLEUScore:
    """BLEU from its sufficient statistics: the geometric mean of the n-gram precisions times BP.

    Smoothing (Chen and Cherry, 2014) decides what a zero count becomes: ``none`` leaves it (the
    score is then 0), ``floor`` uses ``smooth_value`` (0.1) matches, ``add-k`` adds ``smooth_value``
    (1) to the matched and total counts of orders 2 and up, ``exp`` (NIST) uses ``1 / 2^k`` for
    the k-th zero. With ``effective_order`` only orders with at least one hypothesis n-gram count,
    which sentence-level BLEU needs for short sentences.
    """
    if smooth not in SMOOTHING_DEFAULTS:
        raise ValueError(f"unknown smoothing {smooth!r}; allowed: {', '.join(SMOOTHING_DEFAULTS)}")
    k = SMOOTHING_DEFAULTS[smooth] if smooth_value is None else float(smooth_value)
    max_order = len(correct)
    bp = _brevity_penalty(hyp_len, ref_len)
    precisions = [0.0] * max_order
    stats = (tuple(correct), tuple(total), hyp_len, ref_len)
    if not any(correct):  # nothing matched at any order: BLEU is 0 whatever the smoothing
        return BLEUScore(0.0, tuple(precisions), bp, *stats)
    orders_used, zeros_so_far = max_order, 0
    for n in range(max_order):
        matched, count = float(correct[n]), float(total[n])
        if smooth == "add-k" and n > 0:
            matched, count = matched + k, count + k
        if count == 0:  # the hypothesis is shorter than n: no higher order can count either
            break
        if effective_order:
            orders_used = n + 1
        if matched > 0:
            precisions[n] = 100.0 * matched / count
        elif smooth == "exp":
            zeros_so_far += 1
            precisions[n] = 100.0 / (2**zeros_so_far * count)
        elif smooth == "floor":
            precisions[n] = 100.0 * k / count
    used = precisions[:orders_used]
    if min(used) <= 0:  # log 0: the geometric mean is 0
        return BLEUScore(0.0, tuple(precisions), bp, *stats)
    score = bp * math.exp(sum(math.log(p) for p in used) / orders_used)
    return BLEUScore(score, tuple(precisions), bp, *stats)


def _as_reference_list(refs: str | Sequence[str], index: int) -> list[str]:
    if isinstance(refs, str):
        return [refs]
    if isinstance(refs, Sequence) and refs and all(isinstance(r, str) for r in refs):
        return list(refs)
    raise TypeError(
        f"references[{index}] must be a str or a non-empty list of str, got {refs!r:.80}"
    )


def _bleu_preprocess(text: str, tokenize: str, lowercase: bool) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"BLEU takes strings, got {type(text).__name__}")
    if tokenize not in _BLEU_TOKENIZERS:
        raise ValueError(f"unknown tokenize {tokenize!r}; allowed: {', '.join(_BLEU_TOKENIZERS)}")
    if lowercase:
        text = text.lower()
    return _BLEU_TOKENIZERS[tokenize](text.rstrip()).split()


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    smooth: Smoothing = "exp",
    smooth_value: float | None = None,
    max_order: int = 4,
    tokenize: str = "13a",
    lowercase: bool = False,
    effective_order: bool = False,
) -> BLEUScore:
    """Corpus BLEU: n-gram statistics summed over all segments, then one score.

    Args:
        hypotheses: one system output per segment.
        references: per segment, one reference string or a list of them. (sacrebleu takes the
            transpose, a list of reference *streams*; the scores are the same.)
        smooth, smooth_value, effective_order: see :func:`bleu_from_stats`.
        max_order: the longest n-gram counted (4 for BLEU-4).
        tokenize: ``"13a"`` (sacrebleu's default) or ``"none"`` (split on whitespace only).
        lowercase: compare case-insensitively.

    Raises:
        ValueError: no hypotheses, or a different number of hypotheses and references.
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("corpus_bleu takes lists; for one sentence use sentence_bleu")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; "
            "give one reference (or list of references) per hypothesis"
        )
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    hyp_len = ref_len = 0
    correct, total = [0] * max_order, [0] * max_order
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        ref_tokens = [_bleu_preprocess(r, tokenize, lowercase) for r in _as_reference_list(refs, i)]
        h, r, c, t = _segment_stats(
            _bleu_preprocess(hyp, tokenize, lowercase), ref_tokens, max_order
        )
        hyp_len, ref_len = hyp_len + h, ref_len + r
        correct = [a + b for a, b in zip(correct, c, strict=True)]
        total = [a + b for a, b in zip(total, t, strict=True)]
    return bleu_from_stats(
        correct,
        total,
        hyp_len,
        ref_len,
        smooth=smooth,
        smooth_value=smooth_value,
        effective_order=effective_order,
    )


def sentence_bleu(
    hypothesis: str,
    references: str | Sequence[str],
    *,
    smooth: Smoothing = "exp",
    smooth_value: float | None = None,
    max_order: int = 4,
    tokenize: str = "13a",
    lowercase: bool = False,
    effective_order: bool = True,
) -> BLEUScore:
    """BLEU of one hypothesis against one or more references (effective order on by default)."""
    if not isinstance(hypothesis, str):
        raise TypeError(f"hypothesis must be a str, got {type(hypothesis).__name__}")
    return corpus_bleu(
        [hypothesis],
        [references],
        smooth=smooth,
        smooth_value=smooth_value,
        max_order=max_order,
        tokenize=tokenize,
        lowercase=lowercase,
        effective_order=effective_order,
    )


# =============================================================================================
# ROUGE (Lin, 2004), as Google's rouge-score computes it
# =============================================================================================


@dataclass(frozen=True)
class RougeScore:
    precision: float
    recall: float
    fmeasure: float


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_ROUGE_TOKEN = re.compile(r"^[a-z0-9]+$")


def porter_stemmer() -> Callable[[str], str]:
    """NLTK's Porter stemmer (the one rouge-score uses); stemming itself is not built here."""
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError as err:  # pragma: no cover - nltk comes with rouge-score (dev extra)
        raise ImportError(
            "ROUGE with stemming needs nltk's Porter stemmer: pip install nltk "
            "(or pip install -e '.[dev]')"
        ) from err
    return PorterStemmer().stem


def rouge_tokenize(text: str, stem: Callable[[str], str] | None = None) -> list[str]:
    """rouge-score's default tokenizer: lowercase, keep runs of ``a-z0-9``, stem words over 3 letters."""
    if not isinstance(text, str):
        raise TypeError(f"ROUGE takes strings, got {type(text).__name__}")
    words = _NOT_ALPHANUMERIC.sub(" ", text.lower()).split()
    if stem is not None:
        words = [stem(w) if len(w) > 3 else w for w in words]
    return [w for w in words if _ROUGE_TOKEN.match(w)]  # a stemmer may return odd tokens


def _f_measure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _rouge_n(reference: list[str], prediction: list[str], n: int) -> RougeScore:
    def ngrams(tokens: list[str]) -> Counter:
        return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    ref, pred = ngrams(reference), ngrams(prediction)
    overlap = sum((ref & pred).values())
    precision = overlap / max(sum(pred.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return RougeScore(precision, recall, _f_measure(precision, recall))


def _lcs_table(a: Sequence[str], b: Sequence[str]) -> list[list[int]]:
    """``table[i][j]`` = length of the longest common subsequence of ``a[:i]`` and ``b[:j]``."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, start=1):
        row, above = table[i], table[i - 1]
        for j, y in enumerate(b, start=1):
            row[j] = above[j - 1] + 1 if x == y else max(above[j], row[j - 1])
    return table


def _lcs_positions(reference: Sequence[str], candidate: Sequence[str]) -> list[int]:
    """Positions in ``reference`` of one longest common subsequence with ``candidate``.

    Several LCSs can exist; walking back from the end, on a tie we step back in the reference
    (as ROUGE-1.5.5 and rouge-score do), so the union LCS of ROUGE-Lsum matches theirs.
    """
    table = _lcs_table(reference, candidate)
    i, j, positions = len(reference), len(candidate), []
    while i > 0 and j > 0:
        if reference[i - 1] == candidate[j - 1]:
            positions.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions[::-1]


def _rouge_l(reference: list[str], prediction: list[str]) -> RougeScore:
    if not reference or not prediction:
        return RougeScore(0.0, 0.0, 0.0)
    lcs = _lcs_table(reference, prediction)[-1][-1]
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return RougeScore(precision, recall, _f_measure(precision, recall))


def _rouge_lsum(reference: list[list[str]], prediction: list[list[str]]) -> RougeScore:
    """Summary-level LCS: each reference sentence against the union of its LCSs with all
    prediction sentences; a token counts at most as often as it occurs on both sides."""
    ref_len, pred_len = sum(map(len, reference)), sum(map(len, prediction))
    if not ref_len or not pred_len:
        return RougeScore(0.0, 0.0, 0.0)
    ref_left, pred_left = (
        Counter(t for s in reference for t in s),
        Counter(t for s in prediction for t in s),
    )
    hits = 0
    for ref_sentence in reference:
        union = sorted({p for pred in prediction for p in _lcs_positions(ref_sentence, pred)})
        for token in (ref_sentence[p] for p in union):
            if ref_left[token] > 0 and pred_left[token] > 0:
                hits += 1
                ref_left[token] -= 1
                pred_left[token] -= 1
    precision, recall = hits / pred_len, hits / ref_len
    return RougeScore(precision, recall, _f_measure(precision, recall))


def rouge(
    prediction: str,
    reference: str | Sequence[str],
    *,
    types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = False,
) -> dict[str, RougeScore]:
    """ROUGE precision, recall and F-measure of a prediction against a reference.

    ``rougeN`` counts overlapping n-grams; ``rougeL`` uses the longest common subsequence of
    the two token lists; ``rougeLsum`` splits both texts into sentences on newlines and uses
    the summary-level (union) LCS. With several references, each type keeps the reference with
    the best F-measure (the first on a tie), as ``rouge_score.RougeScorer.score_multi`` does.

    Args:
        prediction: the generated text.
        reference: the target text, or a list of them.
        types: any of ``rouge1`` .. ``rouge9``, ``rougeL``, ``rougeLsum``.
        use_stemmer: apply the Porter stemmer (from nltk) to words longer than 3 letters.
    """
    if isinstance(reference, str):
        references = [reference]
    elif isinstance(reference, Sequence) and reference:
        references = list(reference)
    else:
        raise TypeError(
            f"reference must be a str or a non-empty list of str, got {reference!r:.80}"
        )
    for t in types:
        if t not in ("rougeL", "rougeLsum") and not re.fullmatch(r"rouge[1-9]", t):
            raise ValueError(
                f"unknown ROUGE type {t!r}; allowed: rouge1..rouge9, rougeL, rougeLsum"
            )
    stem = porter_stemmer() if use_stemmer else None
    pred_tokens = rouge_tokenize(prediction, stem)
    pred_sentences = [rouge_tokenize(s, stem) for s in prediction.split("\n") if s]
    best: dict[str, RougeScore] = {}
    for ref in references:
        ref_tokens = rouge_tokenize(ref, stem)
        for t in types:
            if t == "rougeL":
                score = _rouge_l(ref_tokens, pred_tokens)
            elif t == "rougeLsum":
                ref_sentences = [rouge_tokenize(s, stem) for s in ref.split("\n") if s]
                score = _rouge_lsum(ref_sentences, pred_sentences)
            else:
                score = _rouge_n(ref_tokens, pred_tokens, int(t[5:]))
            if t not in best or score.fmeasure > best[t].fmeasure:
                best[t] = score
    return best


def corpus_rouge(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = False,
) -> dict[str, RougeScore]:
    """The mean of :func:`rouge`'s precision, recall and F-measure over pairs of texts."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "give one reference (or list of references) per prediction"
        )
    if not predictions:
        raise ValueError("corpus_rouge needs at least one prediction")
    per_pair = [
        rouge(p, r, types=types, use_stemmer=use_stemmer)
        for p, r in zip(predictions, references, strict=True)
    ]
    return {
        t: RougeScore(
            *(
                float(np.mean([getattr(s[t], f) for s in per_pair]))
                for f in RougeScore.__annotations__
            )
        )
        for t in types
    }


# =============================================================================================
# Classification: accuracy, precision, recall, F1, as scikit-learn defines them
# =============================================================================================

Average = Literal["binary", "micro", "macro", "weighted"]


def _check_labels(y_true: Sequence[Any], y_pred: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Lists of hashable labels of one kind (all strings, or all integers), same length."""
    y_true = list(np.asarray(y_true).tolist()) if isinstance(y_true, np.ndarray) else list(y_true)
    y_pred = list(np.asarray(y_pred).tolist()) if isinstance(y_pred, np.ndarray) else list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no labels: y_true and y_pred are empty (scikit-learn raises here too)")
    kinds = set()
    for label in y_true + y_pred:
        if isinstance(label, str):
            kinds.add("string")
        elif isinstance(label, Integral | np.bool_) or (
            isinstance(label, Real) and float(label).is_integer()
        ):
            kinds.add("number")
        elif isinstance(label, Real):
            raise ValueError(
                f"label {label!r} is not a class: labels must be strings or integers, "
                "not continuous values"
            )
        else:
            raise TypeError(f"label {label!r} of type {type(label).__name__}: use str or int")
    if len(kinds) > 1:
        raise TypeError("labels mix strings and numbers; use one type for every label")
    return y_true, y_pred


def accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """The share of predictions equal to the true label."""
    y_true, y_pred = _check_labels(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float


def _safe_divide(numerator: float, denominator: float, zero_division: float) -> float:
    return numerator / denominator if denominator else zero_division


def _mean_ignoring_nan(values: list[float], weights: list[float] | None = None) -> float:
    keep = [i for i, v in enumerate(values) if not math.isnan(v)]
    if not keep:
        return math.nan
    kept = [values[i] for i in keep]
    if weights is not None and sum(weights[i] for i in keep) > 0:
        w = [weights[i] for i in keep]
        return sum(v * x for v, x in zip(kept, w, strict=True)) / sum(w)
    return sum(kept) / len(kept)


def precision_recall_f1(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    average: Average = "binary",
    pos_label: Any = 1,
    zero_division: float = 0.0,
) -> PRF:
    """Precision, recall and F1, per class from true/false positives, then averaged.

    The classes are the sorted union of the labels in ``y_true`` and ``y_pred``.

    * ``binary``: only ``pos_label``'s scores (at most two classes allowed).
    * ``micro``: pool the counts of every class first (equals accuracy for single-label data).
    * ``macro``: the unweighted mean over classes, so rare classes count as much as common ones.
    * ``weighted``: the mean weighted by each class's number of true instances.

    A ratio with a zero denominator (a class never predicted has no precision, a class never
    true has no recall) is ``zero_division``: 0.0 (scikit-learn's default, without its
    warning), 1.0, or ``nan``, which the averages then skip, as scikit-learn does. F1 is
    ``2·tp / (2·tp + fp + fn)``, which equals the harmonic mean of precision and recall when both
    are defined.

    Raises:
        ValueError: different lengths, empty inputs, continuous labels, or a ``binary`` average
            over more than two classes or without ``pos_label`` among two.
        TypeError: labels mixing strings and numbers.
    """
    y_true, y_pred = _check_labels(y_true, y_pred)
    if average not in ("binary", "micro", "macro", "weighted"):
        raise ValueError(f"average must be binary, micro, macro or weighted, got {average!r}")
    if not (
        zero_division in (0, 1) or (isinstance(zero_division, float) and math.isnan(zero_division))
    ):
        raise ValueError(f"zero_division must be 0.0, 1.0 or nan, got {zero_division!r}")
    classes = sorted(set(y_true) | set(y_pred))
    if average == "binary":
        if len(classes) > 2:
            raise ValueError(
                f"average='binary' needs at most 2 classes, found {len(classes)}: {classes[:10]}; "
                "use micro, macro or weighted"
            )
        if pos_label not in classes and len(classes) == 2:
            raise ValueError(f"pos_label={pos_label!r} is not one of the labels {classes}")
        classes = [pos_label]
    pairs = list(zip(y_true, y_pred, strict=True))
    tp = [sum(t == c and p == c for t, p in pairs) for c in classes]
    predicted = [sum(p == c for p in y_pred) for c in classes]
    true = [sum(t == c for t in y_true) for c in classes]
    if average == "micro":
        tp, predicted, true = [sum(tp)], [sum(predicted)], [sum(true)]
    zd = float(zero_division)
    precisions = [_safe_divide(a, b, zd) for a, b in zip(tp, predicted, strict=True)]
    recalls = [_safe_divide(a, b, zd) for a, b in zip(tp, true, strict=True)]
    # 2tp / (2tp + fp + fn), with fp + tp = predicted and fn + tp = true
    f1s = [_safe_divide(2 * a, b + c, zd) for a, b, c in zip(tp, true, predicted, strict=True)]
    weights = [float(t) for t in true] if average == "weighted" else None
    return PRF(
        _mean_ignoring_nan(precisions, weights),
        _mean_ignoring_nan(recalls, weights),
        _mean_ignoring_nan(f1s, weights),
    )


def f1_score(y_true: Sequence[Any], y_pred: Sequence[Any], **kwargs: Any) -> float:
    """F1 alone; keyword arguments as in :func:`precision_recall_f1`."""
    return precision_recall_f1(y_true, y_pred, **kwargs).f1


# =============================================================================================
# Question answering: SQuAD exact match and token F1
# =============================================================================================

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation, drop a/an/the, squash spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_answers(ground_truths: str | Sequence[str]) -> list[str]:
    answers = [ground_truths] if isinstance(ground_truths, str) else list(ground_truths)
    if not answers:
        raise ValueError("need at least one ground-truth answer")
    return answers


def exact_match(prediction: str, ground_truths: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised answer, else 0.0."""
    target = normalize_answer(prediction)
    return float(any(target == normalize_answer(a) for a in _as_answers(ground_truths)))


def token_f1(prediction: str, ground_truths: str | Sequence[str]) -> float:
    """The best token-overlap F1 between the prediction and any answer (after normalisation).

    When either side normalises to no tokens the F1 is 1.0 if both do, else 0.0 (SQuAD 2.0's
    rule for unanswerable questions).
    """

    def f1(pred: list[str], gold: list[str]) -> float:
        if not pred or not gold:
            return float(pred == gold)
        same = sum((Counter(pred) & Counter(gold)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(pred), same / len(gold)
        return 2 * precision * recall / (precision + recall)

    pred_tokens = normalize_answer(prediction).split()
    return max(f1(pred_tokens, normalize_answer(a).split()) for a in _as_answers(ground_truths))


def squad_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> dict[str, float]:
    """Mean exact match and token F1 over a set of questions (fractions, not percentages)."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("squad_scores needs at least one prediction")
    pairs = list(zip(predictions, references, strict=True))
    return {
        "exact_match": float(np.mean([exact_match(p, r) for p, r in pairs])),
        "f1": float(np.mean([token_f1(p, r) for p, r in pairs])),
    }
