"""Overlap metrics for generated text, written from their definitions (lesson 09).

BLEU (:func:`corpus_bleu`, :func:`sentence_bleu`), equal to ``sacrebleu`` 2.x with its 13a
tokenizer and smoothing methods, and ROUGE-1/2/L/Lsum (:func:`rouge`, :func:`corpus_rouge`),
equal to Google's ``rouge-score``. The reference libraries are used by the tests only.
:mod:`minillm.evaluate.metrics` re-exports every public name.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

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
