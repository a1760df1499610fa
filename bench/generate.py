"""Generation benchmark on the course model: the KV cache, batch size, continuous batching.

1. Greedy decoding of 64, 256 and 512 new tokens with the KV cache (``minillm.serve.generation``)
   against recomputing the window for every token (``use_cache=False``); the two must produce
   the same tokens. ``transformers``' cached ``generate`` on the same weights runs beside them
   where the request fits its context (prompt + new tokens <= block_size). Twice: on the shipped
   course model, whose 128-token context bounds what the cache can save (past 128 tokens both
   loops slide the window, so the recompute loop never reads more than 128 tokens), and on the
   course model's shape with a 1,024-token context (``--long-context``; untrained weights, since
   speed does not depend on the values), where the whole sequence stays in the context as it
   would in a model trained for long text.
2. Aggregate tokens/s of ``generate_batch`` at batch sizes 1..32 (same new-token count per row).
3. A stream of requests with mixed prompt and output lengths: continuous batching
   (``ContinuousBatcher``) against static batches of the same size that wait for their longest
   member, and against serving one request at a time.

Best of ``--repeats`` runs each (other jobs on a shared machine only ever slow a run down); the
KV-cache speed-up is the median ratio of ``--repeats`` alternating cached/recomputed pairs.

    python bench/generate.py            # writes bench/results/generate.json
    python bench/generate.py --quick    # smaller, for a smoke test

Targets (issue 14): KV cache >= 4.5x at 256 new tokens and >= 7x at 512 (measured with the
whole sequence in the context: the long-context rows); batch 32 >= 8x the tokens/s of batch 1.
"""

from __future__ import annotations

import argparse
import random
import statistics
from importlib.metadata import version
from pathlib import Path

import torch
from common import machine_info, timed, write_results

import minillm
from minillm.model import GPT, GPTConfig
from minillm.serve import ContinuousBatcher, Request, SamplingParams, generate, generate_batch

RESULTS = Path(__file__).resolve().parent / "results" / "generate.json"
LONG_CONTEXT = 1024


def long_context_twin(model: GPT, block_size: int = LONG_CONTEXT) -> GPT:
    """The course model's shape with a longer context, seeded random weights (speed only)."""
    torch.manual_seed(0)
    twin = GPT(GPTConfig.from_dict({**model.config.to_dict(), "block_size": block_size}))
    return twin.eval()


def kv_cache(model, lengths: tuple[int, ...], repeats: int) -> list[dict]:
    prompt = torch.randint(
        0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0)
    )
    rows = []
    for n in lengths:
        # Cached and recomputed runs alternate, so a slow spell of a shared machine hits both:
        # the speed-up is the median of the per-pair ratios, the times are the fastest of each.
        pairs = []
        for _ in range(repeats):
            t_cache, cached = timed(lambda n=n: generate(model, prompt, n, temperature=0))
            t_none, recomputed = timed(
                lambda n=n: generate(model, prompt, n, temperature=0, use_cache=False)
            )
            pairs.append((t_cache, t_none))
        ratios = sorted(t_none / t_cache for t_cache, t_none in pairs)
        row = {
            "new_tokens": n,
            "cache_s": min(p[0] for p in pairs),
            "recompute_s": min(p[1] for p in pairs),
            "speedup": statistics.median(ratios),
            "speedup_range": [ratios[0], ratios[-1]],
            "pairs": len(pairs),
            "identical": bool(torch.equal(cached, recomputed)),
        }
        if prompt.shape[1] + n <= model.config.block_size:
            hf = model.to_hf()
            t_hf, theirs = timed(
                lambda n=n, hf=hf: hf.generate(
                    prompt, max_new_tokens=n, do_sample=False, min_new_tokens=n, pad_token_id=0
                ),
                repeats,
            )
            row.update(
                transformers_s=t_hf, transformers_identical=bool(torch.equal(theirs, cached))
            )
        rows.append(row)
    return rows


def print_kv_rows(rows: list[dict]) -> None:
    print(
        f"{'new tokens':>10} {'cache s':>9} {'recompute s':>12} {'speed-up':>9} {'same':>5} {'hf s':>7}"
    )
    for row in rows:
        hf = f"{row['transformers_s']:7.3f}" if "transformers_s" in row else "    n/a"
        print(
            f"{row['new_tokens']:>10} {row['cache_s']:9.3f} {row['recompute_s']:12.3f} "
            f"{row['speedup']:8.1f}x {row['identical']!s:>5} {hf}"
        )


def batch_sizes(model, sizes: tuple[int, ...], new_tokens: int, repeats: int) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    prompts = {
        size: [
            torch.randint(0, model.config.vocab_size, (8 + i % 9,), generator=gen).tolist()
            for i in range(size)
        ]
        for size in sizes
    }
    # Every repeat times all the sizes in a row, so a slow spell of a shared machine hits one
    # repeat's sizes alike: each ratio to batch 1 is the median over repeats of the same-repeat
    # ratio; tokens/s comes from the fastest time.
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            seconds, _ = timed(lambda p=prompts[size]: generate_batch(model, p, new_tokens))
            times[size].append(seconds)
    base = sizes[0]
    rows = []
    for size in sizes:
        ratios = [(size / t) / (base / t1) for t, t1 in zip(times[size], times[base], strict=True)]
        rows.append(
            {
                "batch": size,
                "seconds": min(times[size]),
                "tokens_per_s": size * new_tokens / min(times[size]),
                "vs_batch_1": statistics.median(ratios),
            }
        )
    return rows


def request_stream(model, count: int, slots: int) -> list[tuple[list[int], int]]:
    rng = random.Random(2)
    block = model.config.block_size
    stream = []
    for _ in range(count):
        prompt_len = rng.randint(4, block // 4)
        out_len = rng.choice([4, 8, 16, 32, 64, block // 2])
        out_len = min(out_len, block - prompt_len)
        stream.append(
            ([rng.randrange(model.config.vocab_size) for _ in range(prompt_len)], out_len)
        )
    return stream


def continuous_vs_static(model, count: int, slots: int, repeats: int) -> dict:
    stream = request_stream(model, count, slots)
    useful = sum(n for _, n in stream)

    def continuous():
        requests = [Request(p, SamplingParams(temperature=0.0, max_tokens=n)) for p, n in stream]
        return [r.tokens for r in ContinuousBatcher(model, n_slots=slots).run(requests)]

    def static():  # batches in arrival order, each running until its longest member is done
        out = []
        for start in range(0, len(stream), slots):
            group = stream[start : start + slots]
            rows = generate_batch(model, [p for p, _ in group], max(n for _, n in group))
            out += [row[:n] for row, (_, n) in zip(rows, group, strict=True)]
        return out

    def one_at_a_time():
        return [generate_batch(model, [p], n)[0] for p, n in stream]

    t_cont, cont = timed(continuous, repeats)
    t_static, stat = timed(static, repeats)
    t_one, one = timed(one_at_a_time, repeats)
    return {
        "requests": count,
        "slots": slots,
        "useful_tokens": useful,
        "continuous_tokens_per_s": useful / t_cont,
        "static_tokens_per_s": useful / t_static,
        "one_at_a_time_tokens_per_s": useful / t_one,
        "continuous_vs_static": t_static / t_cont,
        "continuous_vs_one_at_a_time": t_one / t_cont,
        "same_tokens": cont == stat == one,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _ = minillm.course_model(verbose=False)
    model.eval()
    lengths = (16, 64) if args.quick else (64, 256, 512)
    sizes = (1, 4) if args.quick else (1, 2, 4, 8, 16, 32)
    results = {
        "machine": machine_info(transformers=version("transformers")),
        "model": {"params": model.num_params(), **model.config.to_dict()},
        "kv_cache": kv_cache(model, lengths, args.repeats),
        "long_context_model": {"block_size": LONG_CONTEXT, "weights": "random (seed 0)"},
        "kv_cache_long_context": kv_cache(long_context_twin(model), lengths, args.repeats),
        "batch_sizes": batch_sizes(model, sizes, 16 if args.quick else 48, args.repeats),
        "continuous_batching": continuous_vs_static(
            model, 8 if args.quick else 48, 4 if args.quick else 8, max(1, args.repeats - 1)
        ),
    }
    for key, title in (
        ("kv_cache", f"shipped course model, {model.config.block_size}-token context"),
        ("kv_cache_long_context", f"course shape, {LONG_CONTEXT}-token context"),
    ):
        print(f"KV cache, {title}:")
        print_kv_rows(results[key])
    print(f"\n{'batch':>5} {'tokens/s':>10} {'vs batch 1':>11}")
    for row in results["batch_sizes"]:
        print(f"{row['batch']:>5} {row['tokens_per_s']:10.0f} {row['vs_batch_1']:10.1f}x")
    cb = results["continuous_batching"]
    print(
        f"\n{cb['requests']} mixed requests, {cb['slots']} slots: continuous "
        f"{cb['continuous_tokens_per_s']:.0f} tok/s, static {cb['static_tokens_per_s']:.0f}, one at a "
        f"time {cb['one_at_a_time_tokens_per_s']:.0f} (continuous/static "
        f"{cb['continuous_vs_static']:.2f}x; same tokens: {cb['same_tokens']})"
    )
    if not args.quick:
        write_results(RESULTS, results)
        print(
            f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
