"""Drift monitoring benchmark: false alarms on held-out Shakespeare, detection delay on drift.

The course model scores prompt-sized chunks (``minillm.monitor.prompt_chunks``, 80 to 320
characters of whole lines) from five sources: the test plays of the course split (held out from
training and from the monitor's reference, which is the validation plays), modern English written
for the course, Python source from the standard library, French and German
(``minillm.monitor.drift_samples``). Each chunk is scored once (bits per byte and rare-token share
under the served model); streams are then replayed through ``DriftMonitor.observe_score``, the call
the server's background scorer makes, for several window sizes. A chunk longer than the context is
scored on its first 127 tokens (the server would refuse it with a 400 instead).

Measured, for each window W:
* **false alarms**: held-out prompts in random order (independent users) for ``--windows`` windows
  of W prompts after the first full one; the false-alarm rate is the share of those windows during
  which the alarm went on at least once (the monitor's bound is ``false_alarm_rate`` per window).
  The same for the test plays read in order (one user pasting a play: neighbouring prompts are
  alike, which the bound does not cover).
* **detection delay**: W held-out prompts, then the stream switches to one drift source; the delay
  is the number of drifted prompts until the alarm goes on (``--trials`` streams per source, at
  most ``5 W`` prompts, after which it counts as missed).

    python bench/monitoring.py            # writes bench/results/monitoring.json
    python bench/monitoring.py --quick    # fewer windows and trials; the JSON says "mode": "quick"
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info, write_results

import minillm
from minillm.serve.monitor import (
    DriftMonitor,
    PromptScorer,
    Reference,
    course_texts,
    drift_samples,
    prompt_chunks,
)

RESULTS = Path(__file__).resolve().parent / "results" / "monitoring.json"
DRIFT_SOURCES = ("modern_english", "code", "french", "german")


def in_order_chunks(texts: list[str], seed: int = 3) -> list[str]:
    """Consecutive, non-overlapping chunks of whole lines in reading order, sized like
    :func:`prompt_chunks`'s (a length drawn from 80..320 characters each)."""
    rng, chunks = random.Random(seed), []
    for text in texts:
        chunk, target = "", rng.randint(80, 320)
        for line in (line for line in text.splitlines() if line.strip()):
            chunk += line + "\n"
            if len(chunk) >= target:
                chunks.append(chunk[:320])
                chunk, target = "", rng.randint(80, 320)
    return chunks


def false_alarms(monitor_for, scores, n_windows: int, window: int, rng: random.Random | None):
    """Windows (after the first full one) during which the alarm was on at least once."""
    monitor = monitor_for(window)
    order = list(range(len(scores)))
    stream = [rng.choice(order) for _ in range((n_windows + 1) * window)] if rng else order
    n_windows = len(stream) // window - 1
    alarmed, evaluations, alarm_evaluations = set(), 0, 0
    for i, index in enumerate(stream[: (n_windows + 1) * window]):
        state = monitor.observe_score(scores[index])
        if i >= window - 1:
            evaluations += 1
            alarm_evaluations += state.alarm
            if state.alarm and i >= window:
                alarmed.add((i - window) // window)
    return {
        "windows": n_windows,
        "windows_with_alarm": len(alarmed),
        "false_alarm_rate": len(alarmed) / max(1, n_windows),
        "evaluations": evaluations,
        "alarmed_evaluations": alarm_evaluations,
    }


def detection(monitor_for, held_out, drifted, window: int, trials: int, rng: random.Random):
    """Prompts after the switch until the alarm; None when missed within 5 windows."""
    delays, early = [], 0
    for _ in range(trials):
        monitor = monitor_for(window)
        for _ in range(window):
            early += monitor.observe_score(rng.choice(held_out)).alarm
        delay = None
        for k in range(1, 5 * window + 1):
            if monitor.observe_score(rng.choice(drifted)).alarm:
                delay = k
                break
        delays.append(delay)
    found = [d for d in delays if d is not None]
    return {
        "trials": trials,
        "detected": len(found),
        "median_delay": statistics.median(found) if found else None,
        "max_delay": max(found) if found else None,
        "delays": delays,
        "alarms_before_switch": early,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and trials")
    parser.add_argument("--windows", type=int, default=40, help="held-out windows per size")
    parser.add_argument("--trials", type=int, default=20, help="switches per drift source")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="window sizes")
    parser.add_argument("--false-alarm-rate", type=float, default=0.01, help="bound per window")
    parser.add_argument("--reference", type=int, default=400, help="validation chunks")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.trials = 10, 5
    torch.manual_seed(0)
    # the monitor warns at every alarm onset; thousands of replayed alarms would flood the log
    logging.getLogger("minillm.monitor").setLevel(logging.ERROR)
    started = time.perf_counter()
    model, tokenizer = minillm.course_model(verbose=False)

    t0 = time.perf_counter()
    scorer = PromptScorer.from_training_texts(model, tokenizer, course_texts("train"))
    reference_scores = scorer.score(prompt_chunks(course_texts("val"), args.reference, seed=0))
    reference = Reference.from_scores(reference_scores)
    reference_s = time.perf_counter() - t0

    test_texts = course_texts("test")
    pool = 600 if args.quick else 1200
    t0 = time.perf_counter()
    held_out = scorer.score(prompt_chunks(test_texts, pool, seed=1))
    in_order = scorer.score(in_order_chunks(test_texts))
    drift = {
        kind: scorer.score(prompt_chunks([drift_samples(kind)], 300, seed=2))
        for kind in DRIFT_SOURCES
    }
    n_scored = len(held_out) + len(in_order) + sum(len(v) for v in drift.values())
    score_s = time.perf_counter() - t0

    def monitor_for(window: int) -> DriftMonitor:
        return DriftMonitor(None, reference, window=window, false_alarm_rate=args.false_alarm_rate)

    def feature_summary(scores) -> dict:
        return {
            f: {"mean": float(np.mean(v)), "std": float(np.std(v))}
            for f in ("bits_per_byte", "rare_token_share")
            for v in [[s.feature(f) for s in scores]]
        }

    rng = random.Random(0)
    per_window = {}
    for window in args.sizes:
        monitor = monitor_for(window)
        per_window[str(window)] = {
            "threshold_ks": monitor.threshold,
            "alpha_per_test_per_feature": monitor.alpha,
            "held_out_random_order": false_alarms(monitor_for, held_out, args.windows, window, rng),
            "held_out_in_order": false_alarms(monitor_for, in_order, 0, window, None),
            "detection": {
                kind: detection(monitor_for, held_out, drift[kind], window, args.trials, rng)
                for kind in DRIFT_SOURCES
            },
        }

    print(f"reference: {reference.size} validation chunks; scored {n_scored} prompts in "
          f"{score_s:.1f} s ({1000 * score_s / n_scored:.1f} ms per prompt)")  # fmt: skip
    print(f"{'source':16s} {'bits/byte':>10s} {'rare share':>11s}")
    sources = {"validation (reference)": reference_scores, "test plays": held_out, **drift}
    summary = {name: feature_summary(scores) for name, scores in sources.items()}
    for name, feats in summary.items():
        b, r = feats["bits_per_byte"], feats["rare_token_share"]
        print(f"{name:16s} {b['mean']:6.2f}±{b['std']:.2f} {r['mean']:7.3f}±{r['std']:.3f}")
    print(f"\n{'W':>4s} {'KS thr':>7s} {'false alarms (random)':>22s} {'(in order)':>11s}  "
          + "  ".join(f"{k[:8]:>14s}" for k in DRIFT_SOURCES))  # fmt: skip
    for window, row in per_window.items():
        fa, fo = row["held_out_random_order"], row["held_out_in_order"]
        cells = []
        for kind in DRIFT_SOURCES:
            d = row["detection"][kind]
            cells.append(f"{d['detected']:>2d}/{d['trials']} med {d['median_delay']!s:>4s}")
        print(
            f"{window:>4s} {row['threshold_ks']:7.3f} {fa['windows_with_alarm']:>4d}/{fa['windows']:<4d}"
            f" ({fa['false_alarm_rate']:.3f}) {fo['windows_with_alarm']:>4d}/{fo['windows']:<4d}  "
            + "  ".join(cells)
        )
    results = {
        "machine": machine_info(),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "false_alarm_rate_bound_per_window": args.false_alarm_rate,
            "reference_chunks": reference.size,
            "reference_source": "course split 'val' documents (validation plays)",
            "held_out_source": "course split 'test' documents (test plays)",
            "held_out_pool": len(held_out),
            "in_order_chunks": len(in_order),
            "drift_pool_per_source": 300,
            "rare_max_count": scorer.rare_max_count,
            "windows": args.windows,
            "trials": args.trials,
            "chunk_chars": [80, 320],
        },
        "features": summary,
        "per_window": per_window,
        "seconds": {
            "reference": round(reference_s, 1),
            "scoring": round(score_s, 1),
            "ms_per_prompt": round(1000 * score_s / n_scored, 2),
            "total": round(time.perf_counter() - started, 1),
        },
    }
    write_results(RESULTS, results)
    print(f"\nwrote {RESULTS.relative_to(RESULTS.parents[2])} in {results['seconds']['total']} s")


if __name__ == "__main__":
    main()
