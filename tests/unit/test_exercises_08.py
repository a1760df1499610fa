"""Wrong but plausible answers to lesson 08's exercises fail their checks with a clear message."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

pytest.importorskip("peft")

NOTEBOOK = "solutions/08_fine_tuning_solutions.ipynb"

# DoRA with the norm taken over the wrong axis (per input column instead of per output row).
WRONG_DORA = """
def dora_forward(x, weight, bias, A, B, magnitude, scaling):
    V = weight + scaling * (B @ A)
    direction = V / V.norm(dim=0, keepdim=True)
    return x @ (magnitude[:, None] * direction).T + bias
"""

# The sweep that forgets to train: it reports the loss of the untouched adapters.
UNTRAINED_SWEEP = """
def rank_sweep(ranks, n_steps):
    losses = {}
    for r in ranks:
        model = copy.deepcopy(grown)
        lora_lib.apply_lora(model, targets=lora_targets, r=r, alpha=2 * r)
        with torch.no_grad():
            losses[r] = float(ft.masked_cross_entropy(model(eval_ids)[0], eval_targets))
    return losses
"""


@pytest.mark.slow
def test_dora_with_the_wrong_norm_axis_fails():
    message = check_fails(NOTEBOOK, 1, WRONG_DORA)
    assert "expected" in message and "got" in message


@pytest.mark.slow
def test_a_sweep_that_does_not_train_fails():
    message = check_fails(NOTEBOOK, 2, UNTRAINED_SWEEP)
    assert "expected a held-out loss well below" in message and "got" in message
