"""Wrong but plausible answers to the exercises of lesson 09 fail their check cells.

Each test feeds a mistake a learner could make to the check cell of
``solutions/09_evaluation_solutions.ipynb`` through ``exercise_harness.check_fails`` and asserts
that the check stops with a message that says what was expected and what came.
"""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

L09 = "solutions/09_evaluation_solutions.ipynb"


def assert_says_expected_and_got(message: str, *fragments: str) -> None:
    assert "expected" in message and "got" in message, f"uninformative message: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


# ---------------------------------------------------------------------------------------------
# Exercise 1: chrF
# ---------------------------------------------------------------------------------------------

CHRF = """
from collections import Counter


def chrf(hypothesis, reference, max_n=6, beta=2.0):
    hyp, ref = {strip}
    precisions, recalls, fscores = [], [], []
    for n in range(1, max_n + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            {missing_order}
        matches = {matches}
        p, rc = matches / max(sum(h.values()), 1), matches / max(sum(r.values()), 1)
        precisions.append(p)
        recalls.append(rc)
        fscores.append((1 + beta**2) * p * rc / (beta**2 * p + rc) if p + rc else 0.0)
    if not precisions:
        return 0.0
    {combine}
"""
RIGHT = {
    "strip": '"".join(hypothesis.split()), "".join(reference.split())',
    "missing_order": "continue",
    "matches": "sum((h & r).values())",
    "combine": "p, rc = sum(precisions) / len(precisions), sum(recalls) / len(recalls)\n"
    "    return 100 * (1 + beta**2) * p * rc / (beta**2 * p + rc) if p + rc else 0.0",
}


def test_09_the_reference_form_of_chrf_passes_the_check():
    """The template below is right with RIGHT's pieces, so each wrong variant differs in one."""
    with pytest.raises(AssertionError, match="the check passed on the wrong code"):
        check_fails(L09, 1, CHRF.format(**RIGHT))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"strip": "hypothesis, reference"}, "chrf("),  # keeps the spaces
        ({"matches": "sum(h[g] for g in h if g in r)"}, "chrf("),  # no clipping
        ({"missing_order": "pass"}, "chrf("),  # averages over orders that do not exist
        (
            {"combine": "return 100 * sum(fscores) / len(fscores)"},  # mean of per-order F
            "chrf(",
        ),
        (
            {
                "combine": "p, rc = sum(precisions) / len(precisions), sum(recalls) / len(recalls)\n"
                "    return 100 * 2 * p * rc / (p + rc) if p + rc else 0.0"  # F1, beta ignored
            },
            "chrf(",
        ),
    ],
)
def test_09_chrf_wrong_answers_fail(change, fragment):
    message = check_fails(L09, 1, CHRF.format(**{**RIGHT, **change}))
    assert_says_expected_and_got(message, fragment, "sacrebleu")


# ---------------------------------------------------------------------------------------------
# Exercise 2: distinct-n
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrong", "fragment"),
    [
        (  # the mean of per-text ratios instead of pooling the n-grams
            "def distinct_n(texts, n):\n"
            "    ratios = []\n"
            "    for t in texts:\n"
            "        w = t.split()\n"
            "        g = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]\n"
            "        ratios.append(len(set(g)) / len(g) if g else 0.0)\n"
            "    return sum(ratios) / len(ratios) if ratios else 0.0\n",
            "pooled",
        ),
        (  # joins the texts, so n-grams run across their boundary
            "def distinct_n(texts, n):\n"
            "    w = ' '.join(texts).split()\n"
            "    g = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]\n"
            "    return len(set(g)) / len(g) if g else 0.0\n",
            "pooled",
        ),
    ],
)
def test_09_distinct_n_wrong_answers_fail(wrong, fragment):
    assert_says_expected_and_got(check_fails(L09, 2, wrong), fragment)


# ---------------------------------------------------------------------------------------------
# Exercise 3: the smoothing experiment
# ---------------------------------------------------------------------------------------------

CURVE = """
from minillm.train.baselines import BigramModel

ALPHAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def smoothing_curve(train_ids, val_ids, vocab_size, alphas):
    rows = []
    for alpha in alphas:
        model = BigramModel.fit({fit_on}, vocab_size, alpha=alpha)
        rows.append((alpha, {train_score}, {val_score}))
    return rows


curve = smoothing_curve(train_ids, val_ids, tokenizer.vocab_size, ALPHAS)
best_alpha = min(curve, key=lambda row: row[{pick}])[0]
"""
RIGHT_CURVE = {
    "fit_on": "train_ids",
    "train_score": "model.nll(train_ids)",
    "val_score": "model.nll(val_ids)",
    "pick": 2,
}


@pytest.mark.slow  # each run fits about 18 bigrams on the course data: a few seconds each
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"val_score": "model.nll(train_ids)"}, "val ids"),  # scores the training ids twice
        ({"fit_on": "val_ids"}, "train ids"),  # counts the validation split
        ({"train_score": "model.nll(train_ids) / math.log(2)"}, "train ids"),  # bits, not nats
        ({"pick": 1}, "got 0.001"),  # picks the alpha that memorises best (the smallest)
    ],
)
def test_09_smoothing_experiment_wrong_answers_fail(change, fragment):
    wrong = "import math\n" + CURVE.format(**{**RIGHT_CURVE, **change})
    assert_says_expected_and_got(check_fails(L09, 3, wrong), fragment)


@pytest.mark.slow
def test_09_the_right_smoothing_curve_passes_the_check():
    with pytest.raises(AssertionError, match="the check passed on the wrong code"):
        check_fails(L09, 3, CURVE.format(**RIGHT_CURVE))
