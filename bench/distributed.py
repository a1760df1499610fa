"""Distributed-training benchmark (lesson 06): the scaling table and gloo all-reduce bandwidth.

1. Scaling, one run, the same global batch: tokens/s of a course-width GPT for 1 process x 1
   thread, 1 process x 2 threads and 2 ranks x 1 thread (DistributedDataParallel over gloo), with
   the share of a two-rank step spent communicating (the step timed again under ``no_sync``).
2. All-reduce on 2 CPU ranks from 1 KB to 64 MB: gloo's ``dist.all_reduce`` against the lesson's
   ring all-reduce written from send/recv (``minillm.train.ddp_scratch.ring_all_reduce``), time and
   bus bandwidth ``2 (N-1)/N * bytes / time``.

    python bench/distributed.py            # full run, writes bench/results/distributed.json
    python bench/distributed.py --quick    # smaller model, fewer sizes; "mode": "quick"

On a 2-core CPU the two ranks compete with each other for the same cores and are expected to lose
to intra-op threads (issue 11); the table reports what this machine did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import machine_info, write_results

from minillm.train import dist_lab, launch

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"


def scaling(layers: int, batch: int, steps: int, world: int) -> dict[str, dict[str, float]]:
    overrides = dict(n_layer=layers)
    table = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        table[f"1 process x {threads} thread(s)"] = dist_lab.scaling_run(
            0, 1, overrides, batch, steps
        )
    torch.set_num_threads(1)
    runs = launch(dist_lab.scaling_run, world, args=(overrides, batch, steps))
    table[f"{world} ranks x 1 thread"] = {
        "seconds_per_step": max(r["seconds_per_step"] for r in runs),
        "tokens_per_s": min(r["tokens_per_s"] for r in runs),
        "compute_seconds": max(r["compute_seconds"] for r in runs),
        "comm_share": sum(r["comm_share"] for r in runs) / len(runs),
    }
    base = table["1 process x 1 thread(s)"]["tokens_per_s"]
    for row in table.values():
        row["speedup_vs_1x1"] = row["tokens_per_s"] / base
    return table


def bandwidth(max_kb: int, repeats: int, world: int) -> list[dict[str, float]]:
    sizes = [1024 * 4**k for k in range(20) if 4**k <= max_kb]
    seconds = launch(dist_lab.collectives_section, world, args=(sizes, repeats))[0]["seconds"]
    factor = 2 * (world - 1) / world
    return [
        {
            "bytes": n,
            "gloo_seconds": seconds["gloo"][n],
            "ring_seconds": seconds["ring"][n],
            "gloo_bus_gb_per_s": factor * n / seconds["gloo"][n] / 1e9,
            "ring_bus_gb_per_s": factor * n / seconds["ring"][n] / 1e9,
        }
        for n in sizes
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model and fewer sizes")
    args = parser.parse_args()
    world = 2
    layers, batch, steps = (2, 8, 3) if args.quick else (4, 16, 5)
    max_kb, repeats = (4096, 3) if args.quick else (65536, 5)

    table = scaling(layers, batch, steps, world)
    print(f"scaling: course-width GPT, {layers} layers, global batch {batch} x 128 tokens")
    print(f"{'configuration':24s} {'s/step':>8s} {'tokens/s':>9s} {'vs 1x1':>7s} {'comm':>6s}")
    for name, row in table.items():
        comm = f"{row['comm_share']:.0%}" if "ranks" in name else "-"
        print(
            f"{name:24s} {row['seconds_per_step']:8.3f} {row['tokens_per_s']:9.0f} "
            f"{row['speedup_vs_1x1']:6.2f}x {comm:>6s}"
        )
    rows = bandwidth(max_kb, repeats, world)
    print(f"\nall-reduce on {world} gloo CPU ranks")
    print(f"{'bytes':>10s} {'gloo ms':>9s} {'ring ms':>9s} {'gloo GB/s':>10s} {'ring GB/s':>10s}")
    for r in rows:
        print(
            f"{r['bytes']:10d} {r['gloo_seconds'] * 1e3:9.3f} {r['ring_seconds'] * 1e3:9.3f} "
            f"{r['gloo_bus_gb_per_s']:10.3f} {r['ring_bus_gb_per_s']:10.3f}"
        )
    results = {
        "machine": machine_info(),
        "mode": "quick" if args.quick else "full",
        "scaling": {
            "model": {"preset": "course", "n_layer": layers},
            "global_batch": batch,
            "timed_steps": steps,
            "table": table,
        },
        "all_reduce": {"world_size": world, "repeats": repeats, "sizes": rows},
    }
    write_results(RESULTS, results)
    print(f"\nwrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()
