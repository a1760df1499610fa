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

# Symmetric (absmax) groups where the exercise asks for min/max groups: the library's default.
# (KL in the wrong direction would not do: for small changes KL(p || q) ~ KL(q || p).)
WRONG_KL = """
def kl_by_group_size(model, ids, bits, group_sizes):
    candidates = {g: Q.quantize_model(model, bits, g) for g in group_sizes}
    return {g: a.mean_kl for g, a in Q.logit_agreement(model, candidates, ids).items()}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "exercise, wrong, words",
    [
        (1, WRONG_Q4_1, ["expected all", "got"]),
        (2, WRONG_CLIP, ["expected MSE", "got"]),
        (3, WRONG_KL, ["expected KL", "got"]),
    ],
    ids=["q4_1-nibble-order", "clip-without-clamp", "kl-symmetric-groups"],
)
def test_wrong_answer_fails_the_check_with_a_message(exercise, wrong, words):
    message = check_fails(SOLUTIONS, exercise, wrong)
    for word in words:
        assert word in message, message
