"""Evaluation metrics, each written from its definition.

Taught in lesson 09 (evaluation). Four families, in three modules:

* **Language-model scores** of a model on text: per-token negative log-likelihood with a
  sliding window (:func:`token_nlls`), perplexity and bits per byte (:func:`score_text`,
  :func:`perplexity`, :func:`bits_per_byte`), per-document breakdowns
  (:func:`score_documents`), log-likelihood of continuations for multiple-choice questions
  (:func:`continuation_logprobs`, :func:`score_multiple_choice`) and bias probes
  (:func:`bias_probe_gaps`): this module.
* **Overlap metrics** for generated text: BLEU (:func:`corpus_bleu`, :func:`sentence_bleu`),
  equal to ``sacrebleu`` 2.x, and ROUGE-1/2/L/Lsum (:func:`rouge`), equal to Google's
  ``rouge-score``: :mod:`minillm.evaluate.overlap_metrics`.
* **Classification metrics**: :func:`accuracy` and :func:`precision_recall_f1` (binary, micro,
  macro, weighted), equal to scikit-learn.
* **Question answering**: SQuAD-style :func:`exact_match` and :func:`token_f1`.

The last two families live in :mod:`minillm.evaluate.label_metrics`; all four are importable from here.

A model is anything callable on a ``(batch, time)`` tensor of token ids that returns logits of
shape ``(batch, time, vocab)`` or a tuple whose first item is those logits (``minillm.GPT``
returns ``(logits, loss)``). The context length is read from ``model.config.block_size`` when
present. The reference libraries (sacrebleu, rouge-score, scikit-learn) are used by the tests
only; nothing here imports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from minillm.evaluate.label_metrics import (
    PRF,
    Average,
    accuracy,
    exact_match,
    f1_score,
    normalize_answer,
    precision_recall_f1,
    squad_scores,
    token_f1,
)
from minillm.evaluate.overlap_metrics import (
    BLEUScore,
    RougeScore,
    Smoothing,
    bleu_from_stats,
    corpus_bleu,
    corpus_rouge,
    porter_stemmer,
    rouge,
    rouge_tokenize,
    sentence_bleu,
    tokenize_13a,
)

__all__ = [
    "Average",
    "BLEUScore",
    "LMScore",
    "MultipleChoiceItem",
    "MultipleChoiceResult",
    "PRF",
    "RougeScore",
    "Smoothing",
    "accuracy",
    "bits_per_byte",
    "bleu_from_stats",
    "context_length",
    "continuation_logprobs",
    "corpus_bleu",
    "corpus_rouge",
    "end_of_text_id",
    "exact_match",
    "f1_score",
    "model_logits",
    "NonFiniteLogitsError",
    "normalize_answer",
    "perplexity",
    "porter_stemmer",
    "precision_recall_f1",
    "rouge",
    "rouge_tokenize",
    "score_documents",
    "score_multiple_choice",
    "score_text",
    "sentence_bleu",
    "sentence_logprob",
    "sliding_windows",
    "squad_scores",
    "token_f1",
    "token_nlls",
    "tokenize_13a",
]

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
    if not bool(torch.isfinite(logits).all()):  # NaN compares unequal: it would score as "right"
        raise NonFiniteLogitsError(
            "the model returned NaN or infinite logits, so no score would mean anything; "
            "check the weights (a diverged run or a damaged file) and evaluate a finite model"
        )
    return logits


class NonFiniteLogitsError(ValueError):
    """The model's logits hold NaN or infinity: every metric computed from them is void."""


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


# =============================================================================================
# Bias probes
# =============================================================================================
