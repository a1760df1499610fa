"""Lesson 14's exercise check rejects wrong but plausible clipped losses and accepts the solution."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

SOLUTIONS = "solutions/14_reinforcement_learning_solutions.ipynb"

# The solution: asymmetric clip, the min of the two surrogates, per-sequence then batch mean.
RIGHT = """
def clipped_loss(logps, old_logps, advantages, mask, eps_low, eps_high):
    ratio = torch.exp(logps - old_logps)
    a = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
"""

# The mean over all response tokens of the batch (bnpo) instead of per completion, then over them.
WRONG_TOKEN_MEAN = """
def clipped_loss(logps, old_logps, advantages, mask, eps_low, eps_high):
    ratio = torch.exp(logps - old_logps)
    a = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a)
    return (per_token * mask).sum() / mask.sum()
"""

# The clipped surrogate alone, without the min: the clip then also binds where it should not.
WRONG_NO_MIN = """
def clipped_loss(logps, old_logps, advantages, mask, eps_low, eps_high):
    ratio = torch.exp(logps - old_logps)
    per_token = -ratio.clamp(1 - eps_low, 1 + eps_high) * advantages.unsqueeze(1)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
"""

# One clip range for both sides: eps_high ignored.
WRONG_SYMMETRIC = """
def clipped_loss(logps, old_logps, advantages, mask, eps_low, eps_high):
    ratio = torch.exp(logps - old_logps)
    a = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * a, ratio.clamp(1 - eps_low, 1 + eps_low) * a)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
"""

# Padding counted: every position of the (N, L) tensor, the mask ignored.
WRONG_NO_MASK = """
def clipped_loss(logps, old_logps, advantages, mask, eps_low, eps_high):
    ratio = torch.exp(logps - old_logps)
    a = advantages.unsqueeze(1)
    return -torch.min(ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a).mean()
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "wrong",
    [WRONG_TOKEN_MEAN, WRONG_NO_MIN, WRONG_SYMMETRIC, WRONG_NO_MASK],
    ids=["token-mean", "no-min", "symmetric-clip", "no-mask"],
)
def test_wrong_clipped_loss_fails_the_check_with_a_message(wrong):
    message = check_fails(SOLUTIONS, 1, wrong)
    assert "expected the loss" in message and "got" in message, message


@pytest.mark.slow
def test_the_solution_passes_the_check():
    with pytest.raises(AssertionError, match="passed on the wrong code"):
        check_fails(SOLUTIONS, 1, RIGHT)
