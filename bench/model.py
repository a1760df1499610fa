"""Model benchmark: training-step throughput against transformers, and KV-cache decoding.

1. Forward + backward tokens/s of ``minillm.GPT`` and ``transformers.GPT2LMHeadModel`` with the
   same shape and the same weights (``GPT.to_hf``), on the course preset and on a wider model.
   Both compute the same cross-entropy on their logits; steps alternate between the two models
   so that a busy machine slows both alike. The fastest step of each is reported (on a shared
   machine the minimum is the steadiest estimate of the work itself); medians go to the JSON.
2. Greedy decoding of 64, 256 and 512 new tokens with the KV cache (``GPT.generate``) against
   recomputing the whole prefix for every new token, with ``transformers``' own cached
   ``generate`` beside them. The three must produce the same tokens. Best of 3 runs (2 for the
   slow recompute).

    python bench/model.py            # full run, writes bench/results/model.json
    python bench/model.py --quick    # fewer steps and shorter decodes, for a smoke test

Targets (issue 4): training step >= 1.0x transformers; KV cache >= 5x faster than recompute at
256 new tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine_info, timed, write_results

from minillm.model import GPT, GPTConfig

RESULTS = Path(__file__).resolve().parent / "results" / "model.json"

# (label, config overrides on the course preset, batch size)
TRAIN_SHAPES = [
    ("course", {}, 8),
    ("wide", {"n_embd": 512, "n_head": 8, "n_layer": 4, "block_size": 256}, 4),
]
DECODE_LENGTHS = (64, 256, 512)
PROMPT_LENGTH = 16


def training_step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """One forward + backward pass with the loss computed the same way for both libraries."""
    start = time.perf_counter()
    output = model(x)
    logits = output[0] if isinstance(output, tuple) else output.logits
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def compare_training(label: str, overrides: dict, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    config = GPTConfig.preset("course", **overrides)
    ours = GPT(config).train()
    theirs = ours.to_hf().train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (batch, config.block_size), generator=gen)
    y = torch.randint(0, config.vocab_size, (batch, config.block_size), generator=gen)
    with torch.no_grad():  # same weights, same function: check before timing
        diff = (ours(x)[0] - theirs(x).logits).abs().max().item()
    assert diff < 1e-4, f"{label}: minillm and transformers disagree by {diff}"
    for _ in range(2):  # warm-up: allocator and kernel selection
        training_step_seconds(ours, x, y)
        training_step_seconds(theirs, x, y)
    times: dict[str, list[float]] = {"minillm": [], "transformers": []}
    for _ in range(steps):
        times["minillm"].append(training_step_seconds(ours, x, y))
        times["transformers"].append(training_step_seconds(theirs, x, y))
    tokens = batch * config.block_size
    rate = {name: tokens / min(ts) for name, ts in times.items()}
    median_rate = {name: tokens / statistics.median(ts) for name, ts in times.items()}
    return {
        "shape": label,
        "config": {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "block_size")},
        "params": ours.num_params(),
        "batch": batch,
        "tokens_per_step": tokens,
        "minillm_tokens_per_s": rate["minillm"],
        "transformers_tokens_per_s": rate["transformers"],
        "ratio": rate["minillm"] / rate["transformers"],
        "median_minillm_tokens_per_s": median_rate["minillm"],
        "median_transformers_tokens_per_s": median_rate["transformers"],
        "median_ratio": median_rate["minillm"] / median_rate["transformers"],
        "max_logit_diff": diff,
    }


@torch.no_grad()
def greedy_recompute(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding without a cache: every step runs the model over the whole sequence."""
    for _ in range(steps):
        logits = model(idx)[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def compare_decoding(lengths: tuple[int, ...], repeats: int) -> list[dict]:
    torch.manual_seed(0)
    config = GPTConfig.preset("course", block_size=PROMPT_LENGTH + max(lengths))
    model = GPT(config).eval()
    hf = model.to_hf().eval()
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT_LENGTH))
    model.generate(prompt, 8, temperature=0)  # warm-up
    rows = []
    for n in lengths:
        t_cache, cached = timed(lambda n=n: model.generate(prompt, n, temperature=0), repeats)
        t_full, recomputed = timed(
            lambda n=n: greedy_recompute(model, prompt, n), max(1, repeats - 1)
        )
        t_hf, hf_out = timed(
            lambda n=n: hf.generate(
                prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0
            ),
            repeats,
        )
        rows.append(
            {
                "new_tokens": n,
                "kv_cache_tokens_per_s": n / t_cache,
                "recompute_tokens_per_s": n / t_full,
                "transformers_generate_tokens_per_s": n / t_hf,
                "speedup_vs_recompute": t_full / t_cache,
                "ratio_vs_transformers": t_hf / t_cache,
                "same_tokens": bool(
                    torch.equal(cached, recomputed) and torch.equal(cached, hf_out)
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, shorter decodes")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per model")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 12)
    lengths = (16, 32) if args.quick else DECODE_LENGTHS

    training = [compare_training(label, o, batch, steps) for label, o, batch in TRAIN_SHAPES]
    print("\nTraining step (forward + backward), tokens/s, fastest of", steps, "interleaved steps")
    print(f"{'shape':<8}{'params':>10}{'tokens':>8}{'minillm':>11}{'transformers':>14}{'ratio':>8}")
    for r in training:
        print(
            f"{r['shape']:<8}{r['params']:>10,}{r['tokens_per_step']:>8}"
            f"{r['minillm_tokens_per_s']:>11,.0f}{r['transformers_tokens_per_s']:>14,.0f}"
            f"{r['ratio']:>7.2f}x"
        )

    decoding = compare_decoding(lengths, repeats=1 if args.quick else 3)
    print(
        f"\nGreedy decoding, course model, prompt {PROMPT_LENGTH} tokens, tokens/s, best of 3 (recompute: 2)"
    )
    print(
        f"{'new':>5}{'KV cache':>10}{'recompute':>11}{'speedup':>9}{'HF generate':>13}{'same':>6}"
    )
    for r in decoding:
        print(
            f"{r['new_tokens']:>5}{r['kv_cache_tokens_per_s']:>10,.0f}"
            f"{r['recompute_tokens_per_s']:>11,.0f}{r['speedup_vs_recompute']:>8.1f}x"
            f"{r['transformers_generate_tokens_per_s']:>13,.0f}{'yes' if r['same_tokens'] else 'NO':>6}"
        )

    targets = {
        "training_ratio_at_least_1.0": all(r["ratio"] >= 1.0 for r in training),
        "kv_cache_speedup_at_256_at_least_5": any(
            r["new_tokens"] == 256 and r["speedup_vs_recompute"] >= 5 for r in decoding
        ),
    }
    print("\nTargets:", ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items()))
    if not args.quick:
        write_results(
            args.output,
            {
                "machine": machine_info(transformers=version("transformers")),
                "training": training,
                "decoding": decoding,
                "targets": targets,
            },
        )
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
