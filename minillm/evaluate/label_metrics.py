"""Classification and question-answering metrics, written from their definitions (lesson 09).

:func:`accuracy` and :func:`precision_recall_f1` (binary, micro, macro, weighted averages),
equal to scikit-learn; SQuAD-style :func:`exact_match` and :func:`token_f1`.
:mod:`minillm.evaluate.metrics` re-exports every public name.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

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
