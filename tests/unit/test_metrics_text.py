"""minillm.evaluate.metrics text and label metrics against the reference libraries.

BLEU against sacrebleu, ROUGE against rouge-score, classification against scikit-learn, all to
1e-9 on property-generated inputs and on the edge cases the issue names. SQuAD scores against
hand-worked examples (the official script is not installed).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from sklearn import metrics as skm

import minillm.evaluate as M

logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # its "use effective order" advice
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words chosen to exercise 13a: punctuation to split, numbers with periods, commas and hyphens,
# an XML escape, apostrophes; and ROUGE: stems (running/runs), case, non-ASCII letters.
WORDS = [
    "the", "The", "cat", "cats", "sat", "on", "mat", "mat.", "a", "dog", "running", "runs",
    "ran", "3.5", "1,000", "4-5", "well-known", "it's", "&amp;", "(yes)", "end!", "what?",
    "café", "quick", "brown", "fox", "--", "\"quoted\"", "x", "generously", "generous",
]  # fmt: skip
sentences = st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join)
nonempty = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
SMOOTHINGS = ["none", "floor", "add-k", "exp"]


def assert_bleu_equal(ours: M.BLEUScore, theirs) -> None:
    assert ours.score == pytest.approx(theirs.score, abs=1e-9, rel=0)
    assert ours.brevity_penalty == pytest.approx(theirs.bp, abs=1e-9, rel=0)
    assert len(ours.precisions) == len(theirs.precisions)
    for a, b in zip(ours.precisions, theirs.precisions, strict=True):
        assert a == pytest.approx(b, abs=1e-9, rel=0)
    assert (ours.hyp_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)


def as_streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-hypothesis reference lists -> sacrebleu's reference streams, None-padded."""
    width = max(len(r) for r in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


# ---------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    corpus=st.lists(
        st.tuples(sentences, st.lists(sentences, min_size=1, max_size=3)), min_size=1, max_size=6
    ),
    smooth=st.sampled_from(SMOOTHINGS),
    effective_order=st.booleans(),
    lowercase=st.booleans(),
)
def test_corpus_bleu_equals_sacrebleu(corpus, smooth, effective_order, lowercase):
    hyps = [h for h, _ in corpus]
    refs = [r for _, r in corpus]
    theirs = sacrebleu.corpus_bleu(
        hyps,
        as_streams(refs),
        smooth_method=smooth,
        use_effective_order=effective_order,
        lowercase=lowercase,
    )
    ours = M.corpus_bleu(
        hyps, refs, smooth=smooth, effective_order=effective_order, lowercase=lowercase
    )
    assert_bleu_equal(ours, theirs)


@SETTINGS
@given(
    hyp=sentences,
    refs=st.lists(sentences, min_size=1, max_size=3),
    smooth=st.sampled_from(SMOOTHINGS),
    smooth_value=st.sampled_from([None, 0.01, 0.5, 2.0]),
    effective_order=st.booleans(),
    max_order=st.integers(1, 5),
)
def test_sentence_bleu_equals_sacrebleu(
    hyp, refs, smooth, smooth_value, effective_order, max_order
):
    metric = sacrebleu.BLEU(
        smooth_method=smooth,
        smooth_value=smooth_value,
        effective_order=effective_order,
        max_ngram_order=max_order,
    )
    ours = M.sentence_bleu(
        hyp,
        refs,
        smooth=smooth,
        smooth_value=smooth_value,
        effective_order=effective_order,
        max_order=max_order,
    )
    assert_bleu_equal(ours, metric.sentence_score(hyp, refs))


@SETTINGS
@given(line=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40))
def test_13a_tokenizer_equals_sacrebleu(line):
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    assert M.tokenize_13a(line) == Tokenizer13a()(line)


EDGE_CASES = {
    "empty hypothesis": ([""], [["the cat sat"]]),
    "empty reference": (["the cat sat"], [[""]]),
    "both empty": ([""], [[""]]),
    "hypothesis shorter than n": (["the cat"], [["the cat sat on the mat"]]),
    "one-word hypothesis": (["cat"], [["cat"]]),
    "several references": (["the cat is on the mat"], [["a cat on the mat", "the cat sat", "x"]]),
    "no overlap": (["dogs bark"], [["the cat sat"]]),
    "perfect match": (["the cat sat on the mat ."], [["the cat sat on the mat ."]]),
    "mixed empties": (["", "the cat", "on the mat"], [["x y z"], [""], ["on the mat", "mat"]]),
}


@pytest.mark.parametrize("case", EDGE_CASES, ids=list(EDGE_CASES))
@pytest.mark.parametrize("smooth", SMOOTHINGS)
@pytest.mark.parametrize("effective_order", [False, True])
def test_bleu_edge_cases_equal_sacrebleu(case, smooth, effective_order):
    hyps, refs = EDGE_CASES[case]
    theirs = sacrebleu.corpus_bleu(
        hyps, as_streams(refs), smooth_method=smooth, use_effective_order=effective_order
    )
    ours = M.corpus_bleu(hyps, refs, smooth=smooth, effective_order=effective_order)
    assert_bleu_equal(ours, theirs)


def test_bleu_tokenize_none_and_a_single_reference_string():
    hyps, refs = ["the cat,sat"], ["the cat , sat"]
    theirs = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none")
    assert_bleu_equal(M.corpus_bleu(hyps, refs, tokenize="none"), theirs)
    assert M.corpus_bleu(hyps, refs, tokenize="none").score < M.corpus_bleu(hyps, refs).score


def test_bleu_worked_example_by_hand():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": 5/6 unigrams, 3/5 bigrams,
    # 1/4 trigrams, 0/3 4-grams -> exp smoothing gives the 4-gram 100 / (2 * 3)
    score = M.sentence_bleu("the cat sat on the mat", "the cat is on the mat")
    expected = [500 / 6, 300 / 5, 100 / 4, 100 / 6]
    assert score.precisions == pytest.approx(expected)
    assert score.brevity_penalty == 1.0
    assert score.score == pytest.approx(math.exp(sum(map(math.log, expected)) / 4))


def test_bleu_rejects_lists_of_different_lengths_naming_both():
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        M.corpus_bleu(["a", "b", "c"], ["a", "b"])


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: M.corpus_bleu([], []), ValueError),
        (lambda: M.corpus_bleu("a b", ["a b"]), TypeError),
        (lambda: M.corpus_bleu(["a b"], [[]]), TypeError),
        (lambda: M.corpus_bleu([3], ["a"]), TypeError),
        (lambda: M.corpus_bleu(["a"], ["a"], smooth="laplace"), ValueError),
        (lambda: M.corpus_bleu(["a"], ["a"], tokenize="intl"), ValueError),
        (lambda: M.corpus_bleu(["a"], ["a"], max_order=0), ValueError),
        (lambda: M.sentence_bleu(["a"], ["a"]), TypeError),
    ],
)
def test_bleu_bad_input_raises(call, error):
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------

multiline = st.lists(sentences, min_size=0, max_size=4).map("\n".join)
ROUGE_TYPES = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]


def assert_rouge_equal(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for name, score in theirs.items():
        for field in ("precision", "recall", "fmeasure"):
            assert getattr(ours[name], field) == pytest.approx(
                getattr(score, field), abs=1e-9, rel=0
            ), (name, field)


@SETTINGS
@given(prediction=multiline, target=multiline, use_stemmer=st.booleans())
def test_rouge_equals_rouge_score(prediction, target, use_stemmer):
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=use_stemmer)
    ours = M.rouge(prediction, target, types=ROUGE_TYPES, use_stemmer=use_stemmer)
    assert_rouge_equal(ours, scorer.score(target, prediction))


@SETTINGS
@given(prediction=multiline, targets=st.lists(multiline, min_size=1, max_size=3))
def test_rouge_with_several_references_equals_score_multi(prediction, targets):
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES)
    ours = M.rouge(prediction, targets, types=ROUGE_TYPES)
    assert_rouge_equal(ours, scorer.score_multi(targets, prediction))


def test_rouge_lsum_union_lcs_worked_example():
    # The ROUGE paper's example (section 3.2): r = w1 w2 w3 w4 w5, c1 = w1 w2 w6 w7 w8,
    # c2 = w1 w3 w8 w9 w5. Union LCS = w1 w2 w3 w5: 4 hits of 5 reference tokens.
    ref = "w1 w2 w3 w4 w5"
    pred = "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5"
    score = M.rouge(pred, ref, types=["rougeLsum"])["rougeLsum"]
    assert score.recall == pytest.approx(4 / 5)
    assert score.precision == pytest.approx(4 / 10)


def test_rouge_stemming_matches_inflections():
    plain = M.rouge("the cats were running", "the cat runs", types=["rouge1"])["rouge1"]
    stemmed = M.rouge("the cats were running", "the cat runs", types=["rouge1"], use_stemmer=True)
    assert stemmed["rouge1"].recall > plain.recall


def test_rouge_tokenizer_drops_non_ascii_letters_like_rouge_score():
    assert M.rouge_tokenize("Café-au-lait, 3 CATS!") == ["caf", "au", "lait", "3", "cats"]


def test_corpus_rouge_is_the_mean_and_checks_lengths():
    preds, refs = ["the cat", "a dog barks"], ["the cat sat", "dogs bark"]
    scores = M.corpus_rouge(preds, refs, types=["rouge1"])
    each = [
        M.rouge(p, r, types=["rouge1"])["rouge1"].fmeasure for p, r in zip(preds, refs, strict=True)
    ]
    assert scores["rouge1"].fmeasure == pytest.approx(np.mean(each))
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        M.corpus_rouge(preds, refs[:1])
    with pytest.raises(ValueError, match="at least one"):
        M.corpus_rouge([], [])


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: M.rouge("a", "a", types=["rougeW"]), ValueError),
        (lambda: M.rouge("a", []), TypeError),
        (lambda: M.rouge(3, "a"), TypeError),
    ],
)
def test_rouge_bad_input_raises(call, error):
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------

int_labels = st.integers(0, 4)
str_labels = st.sampled_from(["ant", "bee", "cat", "dog"])


def label_pairs(labels):
    return st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            st.lists(labels, min_size=n, max_size=n), st.lists(labels, min_size=n, max_size=n)
        )
    )


def sklearn_prf(y_true, y_pred, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # UndefinedMetricWarning: we match the value, not the warning
        return skm.precision_recall_fscore_support(y_true, y_pred, **kwargs)[:3]


def assert_close_or_both_nan(a: float, b: float) -> None:
    if math.isnan(b):
        assert math.isnan(a), (a, b)
    else:
        assert a == pytest.approx(b, abs=1e-9, rel=0)


@SETTINGS
@given(
    pair=st.one_of(label_pairs(int_labels), label_pairs(str_labels)),
    average=st.sampled_from(["micro", "macro", "weighted"]),
    zero_division=st.sampled_from([0.0, 1.0, math.nan]),
)
def test_precision_recall_f1_equal_sklearn(pair, average, zero_division):
    y_true, y_pred = pair
    ours = M.precision_recall_f1(y_true, y_pred, average=average, zero_division=zero_division)
    theirs = sklearn_prf(y_true, y_pred, average=average, zero_division=zero_division)
    for a, b in zip((ours.precision, ours.recall, ours.f1), theirs, strict=True):
        assert_close_or_both_nan(a, b)
    assert M.accuracy(y_true, y_pred) == pytest.approx(
        skm.accuracy_score(y_true, y_pred), abs=1e-12
    )


@SETTINGS
@given(pair=label_pairs(st.integers(0, 1)), zero_division=st.sampled_from([0.0, 1.0, math.nan]))
def test_binary_precision_recall_f1_equal_sklearn(pair, zero_division):
    y_true, y_pred = pair  # includes all-0 inputs, where pos_label 1 is absent
    ours = M.precision_recall_f1(y_true, y_pred, average="binary", zero_division=zero_division)
    theirs = sklearn_prf(y_true, y_pred, average="binary", zero_division=zero_division)
    for a, b in zip((ours.precision, ours.recall, ours.f1), theirs, strict=True):
        assert_close_or_both_nan(a, b)


def test_classes_absent_from_predictions_count_as_zero_precision():
    # class 2 is never predicted: its precision is 0/0 -> zero_division (0), so macro drops
    y_true, y_pred = [0, 1, 2, 2], [0, 1, 1, 1]
    ours = M.precision_recall_f1(y_true, y_pred, average="macro")
    assert ours.precision == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert ours.precision == pytest.approx(sklearn_prf(y_true, y_pred, average="macro")[0])


def test_binary_with_string_labels_and_pos_label():
    y_true, y_pred = ["spam", "ham", "spam"], ["spam", "spam", "ham"]
    ours = M.precision_recall_f1(y_true, y_pred, average="binary", pos_label="spam")
    theirs = sklearn_prf(y_true, y_pred, average="binary", pos_label="spam")
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx(theirs)


@pytest.mark.parametrize(
    "y_true, y_pred, kwargs, error, message",
    [
        ([1, 2], [1], {}, ValueError, "y_true has 2 labels but y_pred has 1"),
        ([], [], {}, ValueError, "empty"),
        ([1, "a"], [1, 1], {}, TypeError, "mix strings and numbers"),
        ([0.5, 1.0], [0.5, 1.0], {}, ValueError, "continuous"),
        ([None, 1], [1, 1], {}, TypeError, "use str or int"),
        ([0, 1, 2], [0, 1, 2], {"average": "binary"}, ValueError, "at most 2 classes"),
        ([0, 2], [0, 2], {"average": "binary"}, ValueError, "pos_label=1 is not one of"),
        ([0, 1], [0, 1], {"average": "samples"}, ValueError, "average must be"),
        ([0, 1], [0, 1], {"zero_division": 0.5}, ValueError, "zero_division"),
    ],
)
def test_classification_bad_input_raises(y_true, y_pred, kwargs, error, message):
    with pytest.raises(error, match=message):
        M.precision_recall_f1(y_true, y_pred, **kwargs)


def test_accuracy_accepts_numpy_arrays_and_booleans():
    assert M.accuracy(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(2 / 3)
    y_true, y_pred = [np.bool_(True), np.bool_(False)], [np.bool_(True), np.bool_(True)]
    ours = M.precision_recall_f1(y_true, y_pred, average="binary")
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx(
        sklearn_prf(y_true, y_pred, average="binary")
    )


# ---------------------------------------------------------------------------------------------
# SQuAD exact match and token F1
# ---------------------------------------------------------------------------------------------


def test_normalize_answer_drops_case_punctuation_and_articles():
    assert M.normalize_answer("  The Prince of  Denmark! ") == "prince of denmark"
    assert M.normalize_answer("An apple, a day") == "apple day"
    assert M.normalize_answer("theatre") == "theatre"  # 'the' only as a whole word


def test_exact_match_and_f1_worked_examples():
    assert M.exact_match("the Prince of Denmark.", ["prince of denmark"]) == 1.0
    assert M.exact_match("Prince Hamlet", "prince of denmark") == 0.0
    # pred {prince, hamlet}, gold {prince, of, denmark}: 1 shared, P = 1/2, R = 1/3, F1 = 0.4
    assert M.token_f1("Prince Hamlet", "prince of denmark") == pytest.approx(0.4)
    assert M.token_f1("Prince Hamlet", ["prince of denmark", "hamlet"]) == pytest.approx(2 / 3)
    assert M.token_f1("", "") == 1.0 and M.token_f1("the", "hamlet") == 0.0
    scores = M.squad_scores(["Hamlet", "a king"], [["hamlet"], "the queen"])
    assert scores == {"exact_match": 0.5, "f1": 0.5}


def test_squad_scores_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        M.squad_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one ground-truth"):
        M.exact_match("a", [])
