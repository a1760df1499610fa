"""Lesson 13's exercise checks reject wrong but plausible answers, saying what they expected."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

SOLUTIONS = "solutions/13_interpretability_solutions.ipynb"

# Rollout with the layers composed in the wrong order (the first layer applied last).
WRONG_ORDER = """
def rollout(attn, residual_weight=0.5):
    eye = torch.eye(attn.shape[-1])
    result = eye.expand(attn.shape[1], -1, -1)
    for layer in attn:
        result = result @ (residual_weight * eye + (1 - residual_weight) * layer.mean(1))
    return result
"""

# Rollout that forgets the residual connection: the plain product of head-averaged attention.
WRONG_NO_RESIDUAL = """
def rollout(attn, residual_weight=0.5):
    result = torch.eye(attn.shape[-1]).expand(attn.shape[1], -1, -1)
    for layer in attn:
        result = layer.mean(1) @ result
    return result
"""

# The loss with the head ablated, without subtracting the intact model's loss.
WRONG_ABSOLUTE = """
def ablation_effects(model, batch):
    effects = torch.zeros(model.config.n_layer, model.config.n_head)
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            with I.ablate_heads(model, [(layer, head)]), torch.no_grad():
                logits = model(batch[:, :-1])[0]
            effects[layer, head] = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).item()
    return effects
"""

# Left Riemann sum: equal weights 1/steps at alpha = 0, 1/steps, ..., never reaching the input.
WRONG_LEFT_RIEMANN = """
def ig_trapezoid(model, ids, target, baseline, steps):
    e = model.transformer.wte(ids[None]).detach()[0]
    alphas = torch.arange(steps) / steps
    points = (baseline + alphas[:, None, None] * (e - baseline)).requires_grad_(True)
    out = I.logprob_from_embeddings(model, ids[None], points, target, -1)
    (grad,) = torch.autograd.grad(out.sum(), points)
    return (grad.mean(0) * (e - baseline)).sum(-1).detach()
"""

# The zero-baseline habit: multiplying the averaged gradient by e instead of e - e'.
WRONG_TIMES_INPUT = """
def ig_trapezoid(model, ids, target, baseline, steps):
    e = model.transformer.wte(ids[None]).detach()[0]
    alphas = torch.linspace(0.0, 1.0, steps)
    weights = torch.full((steps,), 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    points = (baseline + alphas[:, None, None] * (e - baseline)).requires_grad_(True)
    out = I.logprob_from_embeddings(model, ids[None], points, target, -1)
    (grad,) = torch.autograd.grad(out.sum(), points)
    return ((weights[:, None, None] * grad).sum(0) * e).sum(-1).detach()
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "exercise, wrong, words",
    [
        (1, WRONG_ORDER, ["expected the rollout", "got"]),
        (1, WRONG_NO_RESIDUAL, ["expected the rollout", "got"]),
        (2, WRONG_ABSOLUTE, ["expected a loss change", "got"]),
        (3, WRONG_LEFT_RIEMANN, ["expected attributions", "got"]),
        (3, WRONG_TIMES_INPUT, ["expected attributions", "got"]),
    ],
    ids=[
        "rollout-order",
        "rollout-no-residual",
        "ablation-absolute",
        "ig-left-riemann",
        "ig-times-input",
    ],
)
def test_wrong_answer_fails_the_check_with_a_message(exercise, wrong, words):
    message = check_fails(SOLUTIONS, exercise, wrong)
    for word in words:
        assert word in message, message
