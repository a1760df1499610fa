"""Robustness benchmark (issue 17): encoder and dedup time on adversarial inputs, at 4 sizes each.

Each row doubles the input; the ratio column is time(n) / time(n/2): about 2 means linear, about
4 quadratic. Rows:

* pure-Python encoder (GPT-2 vocabulary, cold cache) on a run of spaces and on a run of letters;
* the plain merge scan used before issue 17 on a run of letters (the quadratic baseline);
* the tiktoken-backed encoder (``BPETokenizer.encode_ordinary_batch``) on runs of spaces up to a
  million (tiktoken alone overflows its stack there);
* ``minillm.data.dedup`` on identical documents, beside all-pairs near-duplicate search
  (``find_near_duplicates``, what dedup did before) as the baseline.

    python bench/robustness.py            # writes bench/results/robustness.json
    python bench/robustness.py --quick    # smaller sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import machine_info, timed, write_results

from minillm.data import Document, dedup, find_near_duplicates
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    args = parser.parse_args(argv)
    scale = 4 if args.quick else 1
    doubling = lambda first: [first // scale * 2**k for k in range(4)]  # noqa: E731

    gpt2 = BPETokenizer.gpt2()

    def cold() -> BPETokenizer:  # a fresh tokenizer: nothing cached from the previous size
        return BPETokenizer(dict(gpt2._ranks), gpt2.pattern, gpt2.special_tokens)

    print(f"{'series':<48} {'size':>10} {'time (ms)':>11} {'ratio':>8}")
    results = [
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
                + "The 'before' rows reproduce the code paths that issue 17 replaced."
            ),
            "series": results,
            "argv": sys.argv[1:],
        },
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
