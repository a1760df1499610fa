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
