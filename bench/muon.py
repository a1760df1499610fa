"""Muon + AdamW against AdamW alone on lesson 05's run, for the same compute.

Each run trains lesson 05's model and recipe (:data:`minillm.course.LESSON_TRAIN`) from scratch
and is scored on the whole course validation split in bits per byte
(:func:`minillm.course.split_bits_per_byte`). AdamW runs the lesson's ``--steps``; Muon's
Newton-Schulz iterations make its steps dearer, so it runs fewer, in proportion to the compute
of one step. That compute is measured once at the start as CPU time of one thread (both
optimizers alternating, the fastest of many steps): unlike wall-clock time on a shared machine, it
does not grow when other jobs take the cores. The schedule's warmup keeps the lesson's share of
the steps.

First a sweep of ``muon_lr`` on the first seed (beside AdamW), then AdamW and the best
``muon_lr`` on the other seeds, alternating.

    python bench/muon.py                                  # 2300 AdamW steps, 3 rates, 2 seeds
    python bench/muon.py --steps 600 --muon-lrs 0.02 --seeds 1337
    python bench/muon.py --threads 1     # on a machine that other jobs keep busy

Prints a table and writes ``bench/results/muon.json`` (each run's wall time and the machine's
load are recorded beside it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from common import RESULTS_DIR, machine_info, write_results

from minillm.course import LESSON_TRAIN, course_data, lesson_config, split_bits_per_byte
from minillm.data import batch_generator, get_batch, load_split
from minillm.model import GPT, GPTConfig
from minillm.train import META_FILE, configure_optimizer, train

RESULTS = RESULTS_DIR / "muon.json"


def seconds_per_step(optimizers: list[str], rounds: int = 40) -> dict[str, float]:
    """CPU seconds of one step (forward, backward, update) on one thread, per optimizer.

    The fastest of ``rounds`` steps of each, alternating; thread CPU time, so other jobs on the
    machine barely change it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data_dir = course_data(verbose=False)
    tokens = load_split(data_dir, "train")
    vocab_size = json.loads((data_dir / META_FILE).read_text())["vocab_size"]
    overrides = {**LESSON_TRAIN["model_overrides"], "vocab_size": vocab_size}
    setups = {}
    for name in optimizers:
        torch.manual_seed(0)
        model = GPT(GPTConfig.preset(LESSON_TRAIN["model_preset"], **overrides))
        optimizer = configure_optimizer(
            model, learning_rate=LESSON_TRAIN["learning_rate"], weight_decay=0.1, optimizer=name
        )
        setups[name] = (model, optimizer, batch_generator(0))
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds + 3):  # the first steps warm up the allocator and the kernels
        for name, (model, optimizer, generator) in setups.items():
            x, y = get_batch(
                tokens, LESSON_TRAIN["batch_size"], model.config.block_size, generator=generator
            )
            start = time.thread_time()
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times[name].append(time.thread_time() - start)
    torch.set_num_threads(threads)
    return {name: min(t[3:]) for name, t in times.items()}


def run(name: str, settings: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
    data_dir = course_data(verbose=False)
    warmup = round(steps * LESSON_TRAIN["warmup_steps"] / LESSON_TRAIN["max_steps"])
    with tempfile.TemporaryDirectory() as tmp:
        config = lesson_config(
            **settings,
            data_dir=str(data_dir),
            out_dir=tmp,
            seed=seed,
            max_steps=steps,
            warmup_steps=warmup,
            eval_interval=steps,
            eval_batches=2,
            log_interval=max(1, steps // 20),
            checkpoint_interval=0,
            progress=False,
            device="cpu",
            peak_gflops=1.0,  # MFU is not reported here: skip the matmul timing
        )
        result = train(config)
    score = split_bits_per_byte(result.model, data_dir)
    row = {
        "name": name,
        "seed": seed,
        "settings": settings,
        "steps": steps,
        "warmup_steps": warmup,
        "train_seconds": round(result.seconds, 1),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "val_bits_per_byte": round(score["bits_per_byte"], 4),
    }
    print(
        f"{name:16s} seed {seed}: {steps:5d} steps, {result.seconds:5.1f} s wall, "
        f"val {row['val_bits_per_byte']:.4f} bits/byte",
        flush=True,
    )
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for name in dict.fromkeys(r["name"] for r in rows):
        scores = [r["val_bits_per_byte"] for r in rows if r["name"] == name]
        mine = [r for r in rows if r["name"] == name]
        table.append(
            {
                "name": name,
                "seeds": len(scores),
                "mean": round(statistics.mean(scores), 4),
                "spread": round(max(scores) - min(scores), 4) if len(scores) > 1 else None,
                "wall_seconds": round(statistics.mean(r["train_seconds"] for r in mine), 1),
                "steps": round(statistics.mean(r["steps"] for r in mine)),
            }
        )
    return sorted(table, key=lambda t: t["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=LESSON_TRAIN["max_steps"], help="AdamW's steps per run"
    )
    parser.add_argument("--muon-lrs", type=float, nargs="+", default=[0.01, 0.02, 0.04])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for training (default: all)"
    )
    args = parser.parse_args()
    if args.steps < 50:
        parser.error(f"--steps must be >= 50, got {args.steps}")
    if any(not (math.isfinite(lr) and lr > 0) for lr in args.muon_lrs):
        parser.error("--muon-lrs must be positive numbers")
    if args.threads:  # one thread on a machine that other jobs share: no spinning at barriers
        torch.set_num_threads(args.threads)
    machine = machine_info()
    step_s = seconds_per_step(["adamw", "muon"])
    steps = {name: round(args.steps * step_s["adamw"] / t) for name, t in step_s.items()}
    print(
        ", ".join(f"{n}: {t * 1e3:.1f} CPU ms/step -> {steps[n]} steps" for n, t in step_s.items()),
        flush=True,
    )
    adamw = {"optimizer": "adamw"}
    rows = [run("adamw", adamw, args.seeds[0], steps["adamw"])]
    for lr in args.muon_lrs:  # the sweep, on the first seed
        muon = {"optimizer": "muon", "muon_lr": lr}
        rows.append(run(f"muon lr={lr:g}", muon, args.seeds[0], steps["muon"]))
    best = min(rows[1:], key=lambda r: r["val_bits_per_byte"])
    for seed in args.seeds[1:]:  # the leaders on the other seeds, alternating
        rows.append(run("adamw", adamw, seed, steps["adamw"]))
        rows.append(run(best["name"], best["settings"], seed, steps["muon"]))
    table = summarise(rows)
    header = (
        f"{'run':16s} {'seeds':>5s} {'bits/byte':>10s} {'spread':>7s} {'steps':>6s} {'wall s':>7s}"
    )
    print("\n" + header)
    for t in table:
        spread = f"{t['spread']:.4f}" if t["spread"] is not None else "-"
        print(
            f"{t['name']:16s} {t['seeds']:5d} {t['mean']:10.4f} {spread:>7s} "
            f"{t['steps']:6d} {t['wall_seconds']:7.1f}"
        )
    ms = {name: round(t * 1e3, 2) for name, t in step_s.items()}
    write_results(
        RESULTS,
        {
            "machine": machine,
            "lesson_train": LESSON_TRAIN,
            "cpu_ms_per_step_one_thread": ms,
            "steps": steps,
            "table": table,
            "runs": rows,
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
