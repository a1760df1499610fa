"""Lesson 11's exercise checks reject wrong-but-plausible answers, with messages that say why."""

from __future__ import annotations

from pathlib import Path

import pytest
from exercise_harness import check_fails

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions" / "11_serving_solutions.ipynb"

PRESENCE_PER_OCCURRENCE = """
def frequency_presence(history, logits, frequency, presence):
    V = logits.shape[-1]
    safe = torch.where(history >= 0, history, V)
    counts = torch.zeros(logits.shape[0], V + 1).scatter_add_(1, safe, torch.ones(history.shape))[:, :V]
    return logits - counts * (frequency + presence)  # presence paid on every repetition
"""

PADDING_COUNTED = """
def frequency_presence(history, logits, frequency, presence):
    counts = torch.zeros_like(logits)
    for b, row in enumerate(history.tolist()):
        for t in row:
            counts[b, t] += 1  # -1 (padding) wraps round to the last token
    return logits - counts * frequency - (counts > 0).float() * presence
"""

TYPICAL_BY_PROBABILITY = """
def typical_(logits, mass):
    probs, order = logits.softmax(-1).sort(-1, descending=True)  # top-p's order, not typicality
    drop = probs.cumsum(-1) - probs >= mass
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
"""

DISTINCT_PER_TEXT = """
def distinct_2(texts):
    scores = []
    for t in texts:
        w = t.split()
        grams = [tuple(w[i:i + 2]) for i in range(len(w) - 1)]
        if grams:
            scores.append(len(set(grams)) / len(grams))
    return sum(scores) / len(scores) if scores else 0.0


def temperature_sweep(model, tok, temperatures, n_samples, n_tokens, seed):
    return {t: 0.0 for t in temperatures}
"""

SWEEP_IGNORES_TEMPERATURE = """
def distinct_2(texts):
    grams = [tuple(w[i:i + 2]) for w in (t.split() for t in texts) for i in range(len(w) - 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def temperature_sweep(model, tok, temperatures, n_samples, n_tokens, seed):
    start = torch.tensor([tok.encode("ROMEO.\\n")] * n_samples)
    out = generate(model, start, n_tokens, temperature=0)  # forgot to pass the temperature
    score = distinct_2([tok.decode(r[start.shape[1]:].tolist()) for r in out])
    return {t: score for t in temperatures}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("exercise", "wrong", "says"),
    [
        (1, PRESENCE_PER_OCCURRENCE, "expected"),
        (1, PADDING_COUNTED, "expected"),
        (2, TYPICAL_BY_PROBABILITY, "tokens kept per row"),
        (3, DISTINCT_PER_TEXT, "pooled over texts"),
        (3, SWEEP_IGNORES_TEMPERATURE, "more diversity"),
    ],
    ids=[
        "presence-per-occurrence",
        "padding-counted",
        "typical-by-probability",
        "distinct-per-text",
        "sweep-ignores-temperature",
    ],
)
def test_wrong_answers_fail_with_a_message(exercise, wrong, says):
    message = check_fails(SOLUTIONS, exercise, wrong)
    assert says in message and "got" in message, message
