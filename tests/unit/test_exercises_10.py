"""Lesson 10's exercise checks reject wrong but plausible answers, saying what they expected."""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

SOLUTIONS = "solutions/10_quantization_solutions.ipynb"

# Q4_1 with the nibbles packed as (2j, 2j + 1), the generic packing of the lesson's section 4,
# instead of ggml's (j, j + 16).
WRONG_Q4_1 = """
def q4_1_blocks(w):
    w = np.asarray(w, dtype=np.float32)
    blocks = w.reshape(w.shape[0], -1, 32)
    lo, hi = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    d = (hi - lo) / np.float32(15)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
    codes = np.trunc((blocks - lo) * inv + np.float32(0.5)).clip(0, 15).astype(np.uint8)
    nibbles = codes[..., 0::2] | (codes[..., 1::2] << 4)
    header = [d.astype(np.float16).view(np.uint8), lo.astype(np.float16).view(np.uint8)]
    return np.concatenate([*header, nibbles], axis=-1).reshape(w.shape[0], -1)
"""

# Clipping search that clips the scale but forgets to clamp the codes (the outliers then keep
# their value with codes outside the 4-bit range: a lower error that no 4-bit format can store).
WRONG_CLIP = """
def clip_search(w, bits, group_size, ratios):
    half = 2 ** (bits - 1)
    groups = w.reshape(w.shape[0], -1, group_size)
    errors = []
    for r in ratios:
        s = r * groups.abs().amax(-1, keepdim=True) / (half - 1)
        q = torch.round(groups / s)
        errors.append((q * s - groups).pow(2).mean().item())
    return ratios[min(range(len(ratios)), key=errors.__getitem__)], errors
"""

# KL in the wrong direction: KL(quantized || float).
WRONG_KL = """
def kl_by_group_size(model, ids, bits, group_sizes):
    import torch
    out = {}
    n = (len(ids) - 1) // 128 * 128
    x = ids[:n].reshape(-1, 128)
    with torch.inference_mode():
        logp = torch.log_softmax(model(x)[0], -1)
        for g in group_sizes:
            logq = torch.log_softmax(Q.quantize_model(model, bits, g, scheme="minmax")(x)[0], -1)
            out[g] = (logq.exp() * (logq - logp)).sum(-1).mean().item()
    return out
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "exercise, wrong, words",
    [
        (1, WRONG_Q4_1, ["expected all", "got"]),
        (2, WRONG_CLIP, ["expected MSE", "got"]),
        (3, WRONG_KL, ["expected KL", "got"]),
    ],
    ids=["q4_1-nibble-order", "clip-without-clamp", "kl-reversed"],
)
def test_wrong_answer_fails_the_check_with_a_message(exercise, wrong, words):
    message = check_fails(SOLUTIONS, exercise, wrong)
    for word in words:
        assert word in message, message
