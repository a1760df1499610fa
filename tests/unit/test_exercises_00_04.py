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


# ---------------------------------------------------------------------------------------------
# Lesson 04
# ---------------------------------------------------------------------------------------------

L04 = "solutions/04_gpt_model_solutions.ipynb"


def llama_count(attention: str, mlp: str, extra: str = "") -> str:
    return f"""
def llama_param_count(vocab_size, n_layer, n_embd, n_head, n_kv_head, ffn_hidden):
    d, head_dim = n_embd, n_embd // n_head
    attention = {attention}
    mlp = {mlp}
    return vocab_size * d + n_layer * (attention + mlp + 2 * d) + d {extra}
"""


GQA = "d * (n_head + 2 * n_kv_head) * head_dim + d * d"
SWIGLU = "3 * d * ffn_hidden"


@pytest.mark.parametrize(
    "wrong",
    [
        llama_count("4 * d * d", SWIGLU),  # keys and values at full width: GQA ignored
        llama_count(GQA, "2 * d * ffn_hidden"),  # a two-matrix MLP
        llama_count(GQA, SWIGLU, "+ 64 * d"),  # a learned position table kept
    ],
    ids=["no-gqa", "two-matrix-mlp", "position-table"],
)
def test_04_llama_param_count_wrong(wrong):
    message = check_fails(L04, 1, wrong)
    assert_says_expected_and_got(message, "llama_param_count(32000, 32, 4096, 32, 8, 11008)")


def test_04_kv_cache_forgets_values():
    wrong = """
def kv_cache_bytes(n_layer, n_kv_head, head_dim, seq_len, batch, bytes_per_value):
    return n_layer * n_kv_head * head_dim * seq_len * batch * bytes_per_value  # keys only
"""
    message = check_fails(L04, 2, wrong)
    assert_says_expected_and_got(message, "4 KV heads", "49,152", "24,576")


def test_04_training_flops_without_output_layer():
    wrong = """
def training_flops_per_token(vocab_size, block_size, n_layer, n_embd):
    return 6 * n_layer * 12 * n_embd**2 + 12 * n_layer * n_embd * block_size
"""
    message = check_fails(L04, 3, wrong)
    assert_says_expected_and_got(message, "training_flops_per_token(2048, 128, 4, 128)")


TRAIN_TINY = """
import torch

from minillm.model import GPT


def train_tiny(pos_emb, steps):
    minillm.seed_everything(tiny_seed)
    model = GPT(tiny_config({pos})).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=tiny_lr)
    generator = torch.Generator().manual_seed(tiny_seed)
    losses = []
    for _ in range(steps):
        x, y = get_batch(tiny_train, tiny_batch, model.config.block_size, generator=generator)
        _, loss = model(x, {targets})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), losses
"""


@pytest.mark.slow  # trains tiny models for a few seconds
def test_04_train_tiny_ignores_the_switch():
    message = check_fails(L04, 4, TRAIN_TINY.format(pos='"learned"', targets="y"))
    assert_says_expected_and_got(message, "pos_emb='rope'", "'learned'")


@pytest.mark.slow  # trains tiny models for a few seconds
def test_04_train_tiny_unshifted_targets():
    # targets = inputs: the model learns to copy the current byte, not to predict the next one
    message = check_fails(L04, 4, TRAIN_TINY.format(pos="pos_emb", targets="x"))
    assert_says_expected_and_got(message)
    # tied embeddings already favour copying at initialisation; either symptom stops the check
    assert "ln 256" in message or "validation loss below" in message, message


# ---------------------------------------------------------------------------------------------
# Lesson 02
# ---------------------------------------------------------------------------------------------

L02 = "solutions/02_tokenization_solutions.ipynb"


@pytest.mark.parametrize(
    "wrong",
    [
        # the mean of the per-text ratios
        """
def corpus_bytes_per_token(tokenizer, texts):
    ratios = [len(t.encode()) / len(tokenizer.encode(t, allowed_special="all")) for t in texts if t]
    return sum(ratios) / len(ratios) if ratios else 0.0
""",
        # characters instead of bytes
        """
def corpus_bytes_per_token(tokenizer, texts):
    n_tokens = sum(len(tokenizer.encode(t, allowed_special="all")) for t in texts)
    return sum(len(t) for t in texts) / n_tokens if n_tokens else 0.0
""",
    ],
    ids=["mean-of-ratios", "characters"],
)
def test_02_corpus_bytes_per_token_wrong(wrong):
    message = check_fails(L02, 1, wrong)
    assert_says_expected_and_got(message, "GPT-2 on the mixed texts")


def test_02_merge_gain_counts_overlaps():
    wrong = """
from itertools import pairwise


def merge_gain(words, pair):
    return sum(n for word, n in words.items() for p in pairwise(word) if p == pair)
"""
    message = check_fails(L02, 2, wrong)
    assert_says_expected_and_got(message, "expected 1, got 2")


def test_02_digit_pattern_keeps_the_leading_space():
    wrong = """
from minillm.tokenizer import GPT2_PATTERN


def digit_pattern():
    return GPT2_PATTERN.replace(" ?\\\\p{N}++", " ?\\\\p{N}")  # a space still leads the first digit
"""
    message = check_fails(L02, 3, wrong)
    assert_says_expected_and_got(message, "'In 1599, 42 men'", "' 1'")


# ---------------------------------------------------------------------------------------------
# Lesson 01
# ---------------------------------------------------------------------------------------------

L01 = "solutions/01_data_solutions.ipynb"


def test_01_char_shingles_without_whitespace_runs_collapsed():
    wrong = """
def char_shingles(text, k):
    text = text.lower()
    return {text[i : i + k] for i in range(len(text) - k + 1)}


def char_jaccard(a, b, k=5):
    sa, sb = char_shingles(a, k), char_shingles(b, k)
    return len(sa & sb) / len(sa | sb)
"""
    message = check_fails(L01, 1, wrong)
    assert_says_expected_and_got(message, "char_shingles('Ab  ab', 2)")


LSH_BEST = """
def best_rows(num_perm, target):
    divisors = [r for r in range(1, num_perm + 1) if num_perm % r == 0]
    return min(divisors, key=lambda r: abs(lsh_threshold(num_perm // r, r) - target))
"""


def test_01_lsh_threshold_approximation():
    wrong = "def lsh_threshold(bands, rows):\n    return (1 / bands) ** (1 / rows)\n" + LSH_BEST
    message = check_fails(L01, 2, wrong)
    assert_says_expected_and_got(message, "lsh_threshold(bands=128, rows=2)")


def test_01_best_rows_picks_bands():
    wrong = (
        "def lsh_threshold(bands, rows):\n    return (1 - 0.5 ** (1 / bands)) ** (1 / rows)\n"
        + LSH_BEST.replace("lsh_threshold(num_perm // r, r)", "lsh_threshold(r, num_perm // r)")
    )
    message = check_fails(L01, 2, wrong)
    assert_says_expected_and_got(message, "best_rows(256, 0.1)")


def test_01_scrub_ipv4_accepts_any_octet():
    wrong = """
import re


def scrub_ipv4(text):
    return re.sub(r"(?<![\\d.])(?:\\d{1,3}\\.){3}\\d{1,3}(?!\\.?\\d)", "<IP>", text)
"""
    message = check_fails(L01, 3, wrong)
    assert_says_expected_and_got(message, "999.1.1.1")


NGRAM = """
import math
from collections import Counter


def ngram_bits_per_byte(train, test, n, alpha=0.1):
    grams = Counter(train[i : i + n] for i in range(len(train) - n + 1))
    contexts = Counter()
    for gram, count in grams.items():
        contexts[gram[:-1]] += count
    total = 0.0
    scored = range(n - 1, len(test))
    for i in scored:
        gram = test[i - n + 1 : i + 1]
        p = (grams[gram] + alpha) / (contexts[gram[:-1]] + {denominator})
        total -= {log}(p)
    return total / len(scored)
"""


@pytest.mark.parametrize(
    "wrong",
    [
        NGRAM.format(denominator="alpha", log="math.log2"),  # un-normalised smoothing
        NGRAM.format(denominator="256 * alpha", log="math.log"),  # nats, not bits
    ],
    ids=["unnormalised", "nats"],
)
def test_01_ngram_wrong(wrong):
    message = check_fails(L01, 4, wrong)
    assert_says_expected_and_got(message, "ngram_bits_per_byte(b'abracadabra'")
