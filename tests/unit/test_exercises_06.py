"""Lesson 06's exercise checks reject wrong but plausible answers, saying what they expected."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

SOLUTIONS = "solutions/06_distributed_solutions.ipynb"

# Each rank exchanges with its ring neighbour instead of rank XOR 2^k: the sums come out wrong.
WRONG_PARTNER = """
def recursive_doubling(values):
    n = len(values)
    if n < 1 or n & (n - 1):
        raise ValueError("power of two")
    held = [v.clone() for v in values]
    messages = []
    for k in range(n.bit_length() - 1):
        sent = [h.clone() for h in held]
        for r in range(n):
            partner = (r + 1) % n
            messages.append((k, r, partner, sent[r].numel()))
            held[partner] = sent[partner] + sent[r]
    return held, messages
"""

# The right sums, computed centrally: no messages, so nothing was simulated.
WRONG_CENTRAL = """
def recursive_doubling(values):
    n = len(values)
    if n < 1 or n & (n - 1):
        raise ValueError("power of two")
    total = torch.stack(values).sum(0)
    return [total.clone() for _ in values], []
"""

# Both copies trained on the whole batch: no reduction-order difference to amplify.
WRONG_DRIFT = """
def order_drift(optimizer, eps=1e-8, steps=20):
    one, two = dist_lab.toy_model(0), dist_lab.toy_model(0)
    make = (lambda m: torch.optim.SGD(m.parameters(), lr=0.1)) if optimizer == "sgd" else (
        lambda m: torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.1, eps=eps))
    opts = [make(one), make(two)]
    for step in range(steps):
        x, y = dist_lab.toy_batch(step)
        for model, opt in zip((one, two), opts):
            model(x, y)[1].backward()
            opt.step()
            opt.zero_grad()
    return dist_lab.max_difference(dist_lab.weights(one), dist_lab.weights(two))
"""


@pytest.mark.parametrize(
    "exercise, wrong, words",
    [
        (1, WRONG_PARTNER, ["expected rank", "got"]),
        (1, WRONG_CENTRAL, ["expected", "messages", "got 0"]),
        (2, WRONG_DRIFT, ["expected SGD to drift", "got 0"]),
    ],
    ids=["ring-neighbour-partner", "central-sum-no-messages", "no-reduction-order-difference"],
)
def test_wrong_answer_fails_the_check_with_a_message(exercise, wrong, words):
    message = check_fails(SOLUTIONS, exercise, wrong)
    for word in words:
        assert word in message, f"expected {word!r} in the check's message, got {message!r}"
