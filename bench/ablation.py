"""The architecture ablation of lesson 04's choices, on the course recipe.

Starting from the GPT-2-style course model (learned positions, LayerNorm, GELU MLP, full
multi-head attention), each variant changes exactly one choice: RoPE instead of learned
positions, RMSNorm instead of LayerNorm, a SwiGLU MLP instead of GELU (its hidden width, GPTConfig's
default, keeps the parameter count close), grouped-query attention with half as many key/value heads. Every
variant trains for the same number of steps on the same batches with several seeds, and is scored
on the whole course validation split in bits per byte; the spread across seeds is the run-to-run
noise that a difference has to exceed to mean anything.

    python bench/ablation.py                    # 5 variants x 3 seeds (about 15 minutes)
    python bench/ablation.py --steps 400 --seeds 2

Prints a table and writes ``bench/results/ablation.json`` and ``bench/results/ablation.png``.
Run it alone on the machine (the times are reported; the comparison is at equal steps).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import torch
from common import RESULTS_DIR, machine_info, write_results

from minillm.course import LESSON_TRAIN, course_data, lesson_config, split_bits_per_byte
from minillm.model import GPTConfig
from minillm.train import train

RESULTS = RESULTS_DIR / "ablation.json"
PLOT = RESULTS_DIR / "ablation.png"


def variants(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Model overrides of each variant: the base, then one change at a time."""
    heads = base.get("n_head", GPTConfig.preset("course").n_head)
    return {
        "base (GPT-2 style)": {},
        "RoPE positions": {"pos_emb": "rope"},
        "RMSNorm": {"norm": "rmsnorm"},
        "SwiGLU MLP": {"mlp": "swiglu"},  # GPTConfig sizes its hidden width to keep the count
        "grouped-query attention": {"n_kv_head": max(1, heads // 2)},
    }


def run(name: str, overrides: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
    data_dir = course_data(verbose=False)
    base = dict(LESSON_TRAIN.get("model_overrides", {}))
    with tempfile.TemporaryDirectory() as tmp:
        config = lesson_config(
            data_dir=str(data_dir),
            out_dir=tmp,
            seed=seed,
            max_steps=steps,
            eval_interval=steps,
            eval_batches=2,
            checkpoint_interval=0,
            progress=False,
            device="cpu",
            model_overrides={**base, **overrides},
        )
        result = train(config)
    score = split_bits_per_byte(result.model, data_dir)
    row = {
        "variant": name,
        "seed": seed,
        "steps": steps,
        "params": sum(p.numel() for p in result.model.parameters()),
        "train_seconds": round(result.seconds, 1),
        "val_bits_per_byte": round(score["bits_per_byte"], 4),
    }
    print(
        f"{name:26s} seed {seed}: {row['val_bits_per_byte']:.4f} bits/byte, "
        f"{row['params']:,} params, {row['train_seconds']:.0f} s",
        flush=True,
    )
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        scores = [r["val_bits_per_byte"] for r in rows if r["variant"] == name]
        table.append(
            {
                "variant": name,
                "mean": round(statistics.mean(scores), 4),
                "std": round(statistics.stdev(scores), 4) if len(scores) > 1 else None,
                "seeds": len(scores),
                "params": next(r["params"] for r in rows if r["variant"] == name),
                "seconds": round(
                    statistics.mean(r["train_seconds"] for r in rows if r["variant"] == name), 1
                ),
            }
        )
    return table


def plot(table: list[dict[str, Any]], rows: list[dict[str, Any]], steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [t["variant"] for t in table]
    ax.barh(names, [t["mean"] for t in table], xerr=[t["std"] or 0 for t in table], alpha=0.6)
    for i, name in enumerate(names):
        seeds = [r["val_bits_per_byte"] for r in rows if r["variant"] == name]
        ax.plot(seeds, [i] * len(seeds), "k.", label="one seed" if i == 0 else None)
    low = min(r["val_bits_per_byte"] for r in rows)
    high = max(r["val_bits_per_byte"] for r in rows)
    ax.set_xlim(low - 0.03, high + 0.03)
    ax.invert_yaxis()
    ax.set_xlabel("validation bits per byte (mean ± std over seeds; lower is better)")
    ax.set_title(f"one change at a time, {steps} steps each")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: lesson)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (>= 2 for noise)")
    args = parser.parse_args()
    steps = args.steps or LESSON_TRAIN["max_steps"]
    if steps < 1 or args.seeds < 1:
        parser.error("--steps and --seeds must be positive")
    base = dict(LESSON_TRAIN.get("model_overrides", {}))
    rows = []
    for seed in range(args.seeds):
        for name, overrides in variants(base).items():
            rows.append(run(name, overrides, 1000 + seed, steps))
    table = summarise(rows)
    print(f"\n{'variant':26s} {'bits/byte':>10s} {'± std':>7s} {'params':>10s} {'s/run':>6s}")
    for t in table:
        std = f"{t['std']:.4f}" if t["std"] is not None else "n/a"
        print(
            f"{t['variant']:26s} {t['mean']:10.4f} {std:>7s} {t['params']:10,d} {t['seconds']:6.0f}"
        )
    write_results(
        RESULTS,
        {
            "machine": machine_info(torch_threads=torch.get_num_threads()),
            "steps": steps,
            "recipe": LESSON_TRAIN,
            "table": table,
            "runs": rows,
        },
    )
    plot(table, rows, steps)
    print(f"wrote {RESULTS} and {PLOT}")


if __name__ == "__main__":
    main()
