"""minillm.monitor: the KS and PSI statistics against brute force, the prompt scorer against a
token-by-token loop, the monitor's false-alarm bound and power, its metrics and warning line."""

from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest
import torch

from minillm.model import GPT, GPTConfig
from minillm.serve.monitor import (
    FEATURES,
    DriftMonitor,
    PromptScore,
    PromptScorer,
    Reference,
    drift_samples,
    ks_critical_value,
    ks_pvalue,
    ks_statistic,
    population_stability_index,
    prompt_chunks,
)
from minillm.tokenizer import BPETokenizer

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. Ünïcödé ✓ "


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT * 8, 300, special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32
    )
    return GPT(config).eval()


def brute_ks(a, b) -> float:
    """sup |F_a - F_b| on a fine grid through every observed value (the definition)."""
    grid = sorted(set(a) | set(b))
    return max(abs(sum(x <= t for x in a) / len(a) - sum(x <= t for x in b) / len(b)) for t in grid)


# ---- the statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_ks_statistic_matches_the_definition_with_ties(seed):
    rng = random.Random(seed)
    a = [rng.choice([0.0, 0.0, 0.1, 0.2, 0.5]) + rng.random() * (seed % 2) for _ in range(23)]
    b = [rng.choice([0.0, 0.1, 0.3]) + rng.random() * (seed % 2) for _ in range(41)]
    assert ks_statistic(a, b) == pytest.approx(brute_ks(a, b), abs=1e-12)


@pytest.mark.parametrize(("n", "m", "shift"), [(16, 400, 0.5), (32, 400, 0.8), (64, 300, 0.3)])
def test_ks_against_scipy(n, m, shift):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(shift, 1, n), rng.normal(0, 1, m)
    exact = stats.ks_2samp(a, b, method="exact")
    d = ks_statistic(a, b)
    assert d == pytest.approx(exact.statistic, abs=1e-12)
    # Stephens' approximation is within a few percent of the exact p-value at these sizes
    assert ks_pvalue(d, n, m) == pytest.approx(exact.pvalue, rel=0.1)


def test_ks_critical_value_inverts_the_p_value():
    for alpha, n, m in [(0.05, 32, 400), (1e-4, 16, 200), (0.01, 64, 64)]:
        d = ks_critical_value(alpha, n, m)
        assert ks_pvalue(d, n, m) <= alpha < ks_pvalue(d - 1e-6, n, m)
    assert ks_critical_value(1e-3, 64, 400) < ks_critical_value(1e-3, 16, 400)
    assert ks_critical_value(1e-30, 2, 2) == math.inf  # two against two can never be that sure


def test_psi_by_hand():
    reference = list(range(10))  # two bins split at the median 4.5: shares 0.5 / 0.5
    current = [1, 2, 3, 7]  # shares 0.75 / 0.25
    want = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert population_stability_index(reference, current, bins=2) == pytest.approx(want)
    assert population_stability_index(reference, reference, bins=5) == pytest.approx(0.0)
    # an empty bin costs a large but finite amount (shares floored at 1e-4)
    assert 1.0 < population_stability_index(reference, [0, 1], bins=2) < 10.0


def test_statistics_refuse_bad_input():
    with pytest.raises(ValueError, match="empty"):
        ks_statistic([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        population_stability_index([1.0, float("nan")], [1.0])
    with pytest.raises(ValueError, match="alpha"):
        ks_critical_value(0.0, 3, 3)
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([1.0], [1.0], bins=0)


# ---- scoring prompts ---------------------------------------------------------------------------


def test_scorer_matches_a_token_by_token_loop(model, tokenizer):
    counts = np.full(tokenizer.vocab_size, 100)
    counts[::3] = 1  # every third id is rare
    scorer = PromptScorer(model, tokenizer, counts, rare_max_count=20, batch_size=2)
    prompts = ["To be, or not", "Ünïcödé ✓ the question", "whether", "mind. To be"]
    for prompt, got in zip(prompts, scorer.score(prompts), strict=True):
        ids = [tokenizer.eot_id, *tokenizer.encode_ordinary(prompt)]
        bits = 0.0
        with torch.no_grad():
            for t in range(1, len(ids)):  # predict ids[t] from everything before it, alone
                logits, _ = model(torch.tensor([ids[:t]]))
                bits -= torch.log_softmax(logits[0, -1].double(), -1)[ids[t]].item() / math.log(2)
        assert got.bytes == len(prompt.encode("utf-8"))
        assert got.tokens == len(ids) - 1
        assert got.bits_per_byte == pytest.approx(bits / got.bytes, rel=1e-4)
        assert got.rare_token_share == pytest.approx(sum(i % 3 == 0 for i in ids[1:]) / got.tokens)


def test_scorer_cuts_long_prompts_to_the_context(model, tokenizer):
    scorer = PromptScorer(model, tokenizer, np.ones(tokenizer.vocab_size, dtype=int) * 50)
    (score,) = scorer.score([TEXT * 5])
    assert score.tokens == model.config.block_size - 1
    kept = tokenizer.encode_ordinary(TEXT * 5)[: score.tokens]
    assert score.bytes == len(tokenizer.decode_bytes(kept))
    with pytest.raises(ValueError, match="non-empty string"):
        scorer.score(["ok", ""])
    with pytest.raises(ValueError, match="one count per id"):
        PromptScorer(model, tokenizer, [1, 2, 3])


def test_rare_counts_from_training_texts(model, tokenizer):
    scorer = PromptScorer.from_training_texts(model, tokenizer, [TEXT] * 30, rare_max_count=20)
    seen = set(tokenizer.encode_ordinary(TEXT))
    (common,) = scorer.score(["To be, or not to be"])
    assert common.rare_token_share == 0.0  # every id occurs 30 times or more
    (odd,) = scorer.score(["zzqx"])  # bytes the training text never holds
    assert not set(tokenizer.encode_ordinary("zzqx")) & seen
    assert odd.rare_token_share == 1.0


def test_prompt_chunks_and_drift_samples():
    texts = [drift_samples("french"), drift_samples("modern_english")]
    chunks = prompt_chunks(texts, 50, min_chars=60, max_chars=200, seed=3)
    assert chunks == prompt_chunks(texts, 50, min_chars=60, max_chars=200, seed=3)
    assert all(60 <= len(c) <= 200 for c in chunks)
    lines = [line for t in texts for line in t.splitlines()]
    assert all(any(line.startswith(c.splitlines()[0]) for line in lines) for c in chunks)
    assert "def " in drift_samples("code") and "Hauptstraße" in drift_samples("german")
    with pytest.raises(ValueError, match="kind must be"):
        drift_samples("klingon")
    with pytest.raises(ValueError, match="no non-blank line"):
        prompt_chunks(["\n\n"], 3)


# ---- the monitor -------------------------------------------------------------------------------


def normal_reference(size: int = 400, seed: int = 0) -> Reference:
    rng = np.random.default_rng(seed)
    return Reference({f: rng.normal(0, 1, size) for f in FEATURES})


def fake(value: float, rare: float) -> PromptScore:
    return PromptScore(bits_per_byte=value, rare_token_share=rare, tokens=10, bytes=30)


def test_false_alarms_stay_within_the_bound_and_a_shift_is_caught():
    reference, window, bound = normal_reference(), 16, 0.05
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(None, reference, window=window, false_alarm_rate=bound)
    n_windows, alarmed = 300, set()
    for i in range((n_windows + 1) * window):
        if monitor.observe_score(fake(*rng.normal(0, 1, 2))).alarm and i >= window:
            alarmed.add((i - window) // window)
    # the bound is 5% of windows (15 of 300); a binomial(300, 0.05) exceeds 26 with p < 0.01
    assert len(alarmed) <= 26, f"expected at most ~15 windows with an alarm, got {len(alarmed)}"
    shifted = DriftMonitor(None, reference, window=window, false_alarm_rate=bound)
    for _ in range(window):
        shifted.observe_score(fake(*rng.normal(0, 1, 2)))
    delays = [k for k in range(1, 2 * window) if shifted.observe_score(fake(3.0, 0.0)).alarm]
    assert delays and delays[0] <= window, f"a 3-sigma shift went unnoticed: {delays[:1]}"


def test_no_test_before_the_window_is_full_and_one_warning_per_alarm(caplog):
    monitor = DriftMonitor(None, normal_reference(), window=8, false_alarm_rate=0.01)
    with caplog.at_level(logging.INFO, logger="minillm.monitor"):
        for _ in range(7):
            assert not monitor.observe_score(fake(9.0, 1.0)).alarm
        states = [monitor.observe_score(fake(9.0, 1.0)) for _ in range(5)]
        assert all(s.alarm for s in states) and states[-1].alarms == 1
        assert states[-1].ks["bits_per_byte"] == 1.0 and states[-1].p_value["bits_per_byte"] < 1e-4
        for _ in range(8):
            cleared = monitor.observe_score(fake(0.0, 0.0))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "drift alarm" in warnings[0].getMessage()
    assert not cleared.alarm and any("cleared" in r.getMessage() for r in caplog.records)


def test_metric_lines_parse_with_prometheus_client():
    parser = pytest.importorskip("prometheus_client.parser")
    monitor = DriftMonitor(None, normal_reference(), window=4)
    for value in (0.1, -0.2, 5.0, 6.0, 7.0):
        monitor.observe_score(fake(value, 0.0))
    families = {
        f.name: f for f in parser.text_string_to_metric_families("\n".join(monitor.metric_lines()))
    }
    assert families["minillm_drift_prompts_scored"].type == "counter"
    assert families["minillm_drift_prompts_scored"].samples[0].value == 5
    ks = {s.labels["feature"]: s.value for s in families["minillm_drift_ks_statistic"].samples}
    assert set(ks) == set(FEATURES) and 0 <= ks["bits_per_byte"] <= 1
    assert families["minillm_drift_ks_threshold"].samples[0].value == pytest.approx(
        monitor.threshold
    )
    assert families["minillm_drift_window_prompts"].samples[0].value == 4


def test_background_scoring_and_dropping(model, tokenizer):
    scorer = PromptScorer(model, tokenizer, np.full(tokenizer.vocab_size, 50))
    monitor = DriftMonitor(scorer, normal_reference(), window=2, max_pending=1)
    assert monitor.submit("To be") and not monitor.submit("or not")  # nobody is scoring yet
    assert monitor.dropped == 1
    monitor.start()
    monitor.submit("to be")
    monitor.join()
    monitor.stop()
    assert monitor.state.observed == 2 and monitor.state.window == 2


def test_monitor_refuses_bad_settings():
    with pytest.raises(ValueError, match="window"):
        DriftMonitor(None, normal_reference(), window=1)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        DriftMonitor(None, normal_reference(), false_alarm_rate=1.5)
    with pytest.raises(ValueError, match="lacks feature"):
        Reference({"bits_per_byte": np.ones(3)})
    with pytest.raises(ValueError, match="no scorer"):
        DriftMonitor(None, normal_reference()).observe("text")


def test_course_texts_are_the_course_splits():
    from minillm.serve.monitor import course_texts

    val, test = course_texts("val"), course_texts("test")
    assert val and test and not set(val) & set(test)
    assert not set(val) & set(course_texts("train"))  # the reference never saw training text
    with pytest.raises(ValueError, match="split must be"):
        course_texts("dev")
