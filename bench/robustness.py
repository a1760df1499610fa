"""Robustness benchmark (issue 17): encoder and dedup time on adversarial inputs, at 4 sizes each.

Each row doubles the input; the ratio column is time(n) / time(n/2): about 2 means linear, about
4 quadratic. Rows:

* pure-Python encoder (GPT-2 vocabulary, cold cache) on a run of spaces and on a run of letters;
* the plain merge scan used before issue 17 on a run of letters (the quadratic baseline);
* the tiktoken-backed encoder (``BPETokenizer.encode_ordinary_batch``) on runs of spaces up to a
  million (tiktoken alone overflows its stack there);
* ``minillm.data.dedup`` on identical documents, beside all-pairs near-duplicate search
  (``find_near_duplicates``, what dedup did before) as the baseline;
* generation (issue 27): ``minillm.serve.generation.generate`` on a tiny model, 1k to 8k new
  tokens with the default sampling settings of ``minillm sample`` (temperature 0.8, top-k 50, so
  the sampling processors run and see the history every step): each doubling must cost at most
  2.3x; beside it the loop before issue 27, which concatenated the whole history every step.

    python bench/robustness.py                    # writes bench/results/robustness.json
    python bench/robustness.py --quick            # smaller sizes, a smoke test
    python bench/robustness.py --only generation  # rerun one section, keep the others' rows
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from common import machine_info, timed, write_results

from minillm.data import Document, dedup, find_near_duplicates
from minillm.model import GPT, GPTConfig
from minillm.model.sampling import cached_steps
from minillm.serve.generation import apply_processors, choose_next, generate, make_processors
from minillm.tokenizer import BPETokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.json"
DOC = "to be or not to be that is the question whether tis nobler in the mind to suffer " * 20


def scan_merge(data: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """The merge loop before issue 17: rescan every pair after each merge (quadratic)."""
    parts = [data[i : i + 1] for i in range(len(data))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def series(name: str, sizes: list[int], run, repeats: int = 1) -> dict:
    """Time ``run(n)`` at every size; the ratio compares each size with the one before."""
    rows, previous = [], None
    for n in sizes:
        seconds, _ = timed(lambda n=n: run(n), repeats=repeats)
        ratio = seconds / previous if previous else None
        rows.append({"size": n, "seconds": seconds, "ratio_per_doubling": ratio})
        previous = seconds
        shown = f"{ratio:5.2f}" if ratio else "    -"
        print(f"{name:<48} {n:>10,} {seconds * 1e3:>11.1f} {shown:>8}", flush=True)
    return {"name": name, "rows": rows}


SAMPLE_DEFAULTS = {"temperature": 0.8, "top_k": 50}  # `minillm sample`'s defaults


def generate_before(model, idx, max_new_tokens, generator, temperature=0.8, top_k=50):
    """The sampling loop before issue 27: ``torch.cat`` of the whole history at every step."""
    processors = make_processors(temperature=temperature, top_k=top_k)
    out, steps = [idx], cached_steps(model, idx)
    logits = next(steps)
    for step in range(max_new_tokens):
        next_id = choose_next(
            apply_processors(processors, torch.cat(out, 1), logits), False, generator
        )
        out.append(next_id)
        if step < max_new_tokens - 1:
            logits = steps.send(next_id)
    return torch.cat(out, 1)


def generation_series(doubling) -> list[dict]:
    """Sampling time at 1k, 2k, 4k, 8k new tokens (default settings) on a tiny model."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)

    def run(n: int) -> None:
        generate(model, prompt, n, generator=torch.Generator().manual_seed(0), **SAMPLE_DEFAULTS)

    def before(n: int) -> None:
        generate_before(model, prompt, n, torch.Generator().manual_seed(0))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer, 32-wide model: more threads only add contention
    try:
        with torch.no_grad():
            run(64)  # warm up
            return [
                series("generate: temperature 0.8, top-k 50", doubling(1024), run, repeats=3),
                series("before: history concatenated every step", doubling(1024), before),
            ]
    finally:
        torch.set_num_threads(threads)


def encoder_series(doubling) -> list[dict]:
    """The issue-17 rows: encoders and dedup on adversarial inputs."""
    gpt2 = BPETokenizer.gpt2()

    def cold() -> BPETokenizer:  # a fresh tokenizer: nothing cached from the previous size
        return BPETokenizer(dict(gpt2._ranks), gpt2.pattern, gpt2.special_tokens)

    return [
        series(
            "pure-Python encode: spaces",
            doubling(131_072),
            lambda n: cold().encode("x" + " " * n + "y"),
        ),
        series(
            "pure-Python encode: letters (heap merge)",
            doubling(16_384),
            lambda n: cold().encode("a" * n),
        ),
        series(
            "before: scan merge of letters (quadratic)",
            doubling(512),
            lambda n: scan_merge(b"a" * n, gpt2._ranks),
        ),
        series(
            "tiktoken-backed encode: spaces",
            doubling(131_072),
            lambda n: gpt2.encode_ordinary_batch(["x" + " " * n + "y"]),
            repeats=3,
        ),
        series(
            "dedup: identical documents",
            doubling(400),
            lambda n: dedup([Document(f"d{i}", DOC) for i in range(n)]),
        ),
        series(
            "before: all-pairs near-duplicate search",
            doubling(100),
            lambda n: find_near_duplicates([DOC] * n),
        ),
    ]


SECTIONS = {"encode": encoder_series, "generation": generation_series}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument(
        "--only", choices=sorted(SECTIONS), default=None, help="run one section, keep the others"
    )
    args = parser.parse_args(argv)
    scale = 4 if args.quick else 1
    doubling = lambda first: [first // scale * 2**k for k in range(4)]  # noqa: E731

    print(f"{'series':<48} {'size':>10} {'time (ms)':>11} {'ratio':>8}")
    results = []
    for name, section in SECTIONS.items():
        if args.only in (None, name):
            results += section(doubling)
    if args.only and RESULTS.is_file():  # keep the rows of the sections not rerun
        fresh = {r["name"] for r in results}
        kept = [r for r in json.loads(RESULTS.read_text())["series"] if r["name"] not in fresh]
        results = kept + results
    niced = os.nice(0) > 0
    write_results(
        RESULTS,
        {
            "machine": machine_info(niceness=os.nice(0)),
            "notes": (
                "ratio_per_doubling = time(n) / time(n/2): ~2 linear, ~4 quadratic. "
                + (
                    "Run under nice on a shared machine, so times are pessimistic and noisy. "
                    if niced
                    else ""
                )
                + "The 'before' rows reproduce the code paths that issue 17 replaced. The "
                "generation rows (issue 27) must stay at or below 2.3 per doubling."
            ),
            "series": results,
            "argv": sys.argv[1:],
        },
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
