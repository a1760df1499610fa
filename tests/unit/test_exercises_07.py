"""Lesson 07's exercise checks reject wrong but plausible answers, saying what they expected."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

SOLUTIONS = "solutions/07_mixed_precision_solutions.ipynb"

# Truncation: keep the top 16 bits and drop the rest (rounds toward zero, not to nearest).
WRONG_TRUNCATE = """
def to_bfloat16(x):
    return (x.contiguous().view(torch.int32) >> 16).to(torch.int16).view(torch.bfloat16)
"""

# Round half up: adds 0x8000 and forgets ties-to-even (right everywhere but on exact ties).
WRONG_HALF_UP = """
def to_bfloat16(x):
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    rounded = (bits + 0x8000) >> 16
    rounded = torch.where(torch.isnan(x), (bits >> 16) | 0x0040, rounded) & 0xFFFF
    signed = torch.where(rounded >= 0x8000, rounded - 0x10000, rounded)
    return signed.to(torch.int16).view(torch.bfloat16)
"""

# Never scales the loss: the scaler is built but the backward runs on the raw loss.
WRONG_UNSCALED = """
def zero_fraction_by_scale(model, x, y, loss_factor, scales):
    fractions = {}
    for scale in scales:
        model.zero_grad(set_to_none=True)
        with P.autocast_context("float16", "cpu"):
            _, loss = model(x, y)
        (loss * loss_factor).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        fractions[scale] = (grads == 0).float().mean().item()
    model.zero_grad(set_to_none=True)
    return fractions
"""

# Keeps counting good steps across an overflow instead of restarting the count.
WRONG_NO_RESET = """
def scale_sequence(overflow, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                   growth_interval=2000):
    scale, good, scales = init_scale, 0, []
    for bad in overflow:
        if bad:
            scale *= backoff_factor
        else:
            good += 1
            if good == growth_interval:
                scale *= growth_factor
                good = 0
        scales.append(scale)
    return scales
"""


@pytest.mark.parametrize(
    "exercise, wrong, words",
    [
        (1, WRONG_TRUNCATE, ["expected bits equal", "got"]),
        (1, WRONG_HALF_UP, ["expected bits equal", "got"]),
        (2, WRONG_UNSCALED, ["expected a zero fraction", "got"]),
        (3, WRONG_NO_RESET, ["expected [", "got ["]),
    ],
    ids=["bf16-truncate", "bf16-half-up", "scale-never-applied", "scaler-count-not-reset"],
)
def test_wrong_answer_fails_the_check_with_a_message(exercise, wrong, words):
    message = check_fails(SOLUTIONS, exercise, wrong)
    for word in words:
        assert word in message, message
