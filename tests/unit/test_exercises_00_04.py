"""Wrong but plausible answers to the exercises of lessons 00-04 fail their check cells.

Each test feeds a mistake a learner could make (an off-by-one, a missing factor, the wrong
mask...) to the check cell of the solutions notebook through ``exercise_harness.check_fails``
and asserts that the check stops with a message that says what was expected and what came.
"""

from __future__ import annotations

import pytest
from exercise_harness import check_fails

L00 = "solutions/00_welcome_and_setup_solutions.ipynb"


def assert_says_expected_and_got(message: str, *fragments: str) -> None:
    assert "expected" in message and "got" in message, f"uninformative message: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


# ---------------------------------------------------------------------------------------------
# Lesson 00
# ---------------------------------------------------------------------------------------------

MEASURED_STUB = """
def measured_gflops(m, k, n, seconds):
    return 1.0
"""


@pytest.mark.parametrize(
    "formula",
    [
        "2 * m * k * n / (bytes_per_value * (m * k + k * n))",  # forgets writing the output
        "m * k * n / (bytes_per_value * (m * k + k * n + m * n))",  # a multiply-add as one FLOP
    ],
)
def test_00_arithmetic_intensity_wrong_formula(formula):
    wrong = (
        f"def arithmetic_intensity(m, k, n, bytes_per_value=4):\n    return {formula}\n"
        + MEASURED_STUB
    )
    message = check_fails(L00, 1, wrong)
    assert_says_expected_and_got(message, "arithmetic_intensity(2, 3, 4, 4)")


@pytest.mark.parametrize(
    "wrong",
    [
        # the flops of each product counted once, not twice
        """
def cheapest_order(p):
    a, b, c, d = p
    return min((a * b * c + a * c * d, "(AB)C"), (b * c * d + a * b * d, "A(BC)"))
""",
        # the dearer order
        """
def cheapest_order(p):
    a, b, c, d = p
    return max((2 * a * b * c + 2 * a * c * d, "(AB)C"), (2 * b * c * d + 2 * a * b * d, "A(BC)"))
""",
    ],
)
def test_00_cheapest_order_wrong(wrong):
    message = check_fails(L00, 2, wrong)
    assert_says_expected_and_got(message, "cheapest_order([10, 1000, 10, 1000])", "400000")


# ---------------------------------------------------------------------------------------------
# Lesson 03
# ---------------------------------------------------------------------------------------------

L03 = "solutions/03_attention_solutions.ipynb"

ALIBI_SLOPES = """
def alibi_slopes(n_head):
    return 2.0 ** (-8.0 * torch.arange(1, n_head + 1) / n_head)
"""


def alibi(scale: str = "/ math.sqrt(q.shape[-1])", bias: str = "-", allowed: str = "distance >= 0"):
    return (
        ALIBI_SLOPES
        + f"""
def alibi_attention(q, k, v, slopes):
    T = q.shape[-2]
    position = torch.arange(T)
    distance = (position[:, None] - position[None, :]).float()
    scores = q @ k.transpose(-2, -1) {scale}
    scores = scores {bias} slopes[:, None, None] * distance
    scores = scores.masked_fill(~({allowed}), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
"""
    )


def test_03_alibi_slopes_off_by_one():
    wrong = alibi().replace("torch.arange(1, n_head + 1)", "torch.arange(n_head)")
    message = check_fails(L03, 1, wrong)
    assert_says_expected_and_got(message, "alibi_slopes(4)", "0.25")


@pytest.mark.parametrize(
    "wrong",
    [
        alibi(scale=""),  # no 1/sqrt(d)
        alibi(bias="+"),  # the distance rewarded instead of penalised
        alibi(allowed="distance <= 0"),  # the transposed mask: keys from the future
    ],
    ids=["unscaled", "bias-sign", "transposed-mask"],
)
def test_03_alibi_attention_wrong(wrong):
    message = check_fails(L03, 1, wrong)
    assert_says_expected_and_got(message, "head 1, last token")


def test_03_sliding_window_off_by_one():
    wrong = """
def sliding_window_mask(T, window):
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return (j <= i) & (j >= i - window)  # one key too many
"""
    message = check_fails(L03, 2, wrong)
    assert_says_expected_and_got(message, "[1, 2, 3, 3, 3, 3]")


FOCUSED = """
def most_focused_head(weights):
    mean = attention_entropy(weights).mean(dim=-1)
    return divmod(int(mean.argmin()), mean.shape[1])
"""
ENTROPY = """
def attention_entropy(weights):
    safe = torch.where(weights > 0, weights, torch.ones_like(weights))
    return -(weights * safe.log()).sum(dim=-1)
"""


@pytest.mark.slow  # loads (or, without a cache, first trains) the course model
@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (ENTROPY.replace("safe.log()", "safe.log2()") + FOCUSED, "uniform causal rows"),
        (ENTROPY.replace("safe.log()", "weights.log()") + FOCUSED, "nan"),
        (ENTROPY + FOCUSED.replace("argmin", "argmax"), "most focused head"),
    ],
    ids=["log2", "nan-from-0-log-0", "argmax"],
)
def test_03_attention_entropy_wrong(wrong, fragment):
    message = check_fails(L03, 3, wrong)
    assert_says_expected_and_got(message, fragment)
