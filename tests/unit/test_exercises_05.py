"""Wrong but plausible answers to the exercises of lesson 05 fail their check cells."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

L05 = "solutions/05_pretraining_solutions.ipynb"

BIGRAM = """
def interpolated_bigram_nats(train, val, vocab_size, alpha=0.05, k=1.0, w=0.1):
    train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
    uni = np.bincount(train, minlength=vocab_size)
    p_uni = (uni + k) / (uni.sum() + k * vocab_size)
    pairs = np.zeros((vocab_size, vocab_size))
    np.add.at(pairs, (train[:-1], train[1:]), 1)
    p_bi = (pairs + alpha) / (pairs.sum(axis=1, keepdims=True) + alpha * vocab_size)
    p = {mix}
    return float(-np.log(p).mean())


best_w = {best_w}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mix", "best_w", "fragment"),
    [
        # the weights swapped: w multiplies the bigram instead of the unigram
        ("w * p_bi[val[:-1], val[1:]] + (1 - w) * p_uni[val[1:]]", "0.05", "w=0.0"),
        # the unigram of the context token instead of the predicted one
        ("(1 - w) * p_bi[val[:-1], val[1:]] + w * p_uni[val[:-1]]", "0.05", "w=0.3"),
        # a correct model, but a weight that does not help
        ("(1 - w) * p_bi[val[:-1], val[1:]] + w * p_uni[val[1:]]", "0.9", "to beat the pure"),
    ],
)
def test_05_interpolated_bigram_wrong(mix, best_w, fragment):
    message = check_fails(L05, 1, BIGRAM.format(mix=mix, best_w=best_w))
    assert "expected" in message and "got" in message, message
    assert fragment in message, message


def test_05_linear_decay_that_never_reaches_min_lr():
    wrong = """
def lr_linear_decay(step, *, max_lr, min_lr, warmup_steps, max_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return max_lr - (max_lr - min_lr) * (step - warmup_steps) / max_steps  # divides by the wrong span
"""
    message = check_fails(L05, 2, wrong)
    assert "expected" in message and "got" in message, message


def test_05_linear_decay_with_an_off_by_one_warmup():
    wrong = """
def lr_linear_decay(step, *, max_lr, min_lr, warmup_steps, max_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps  # step 0 gets a zero rate
    if step >= max_steps:
        return min_lr
    return max_lr - (max_lr - min_lr) * (step - warmup_steps) / (max_steps - warmup_steps)
"""
    message = check_fails(L05, 2, wrong)
    assert "warmup: expected [0.1, 0.5, 1.0]" in message, message


RANGE_TEST_WITHOUT_FRESH_MODEL = """
def lr_range_test(lrs, steps=30):
    batches = range_batches(steps)
    model = tiny_model()  # one model for every rate: each run continues the last
    results = []
    for lr in lrs:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        losses = []
        for x_b, y_b in batches:
            _, loss = model(x_b, y_b)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        tail = float(np.mean(losses[-5:]))
        results.append(tail if math.isfinite(tail) else float("inf"))
    return results


best_lr = 1e-2
"""


@pytest.mark.slow
def test_05_range_test_that_reuses_one_model():
    message = check_fails(L05, 3, RANGE_TEST_WITHOUT_FRESH_MODEL)
    assert "expected" in message and "a fresh tiny_model()" in message, message
