"""Pretraining benchmark: speed of the course run, and learning per CPU-minute.

Part 1, speed. Tokens/s and model FLOPs utilisation (MFU) of the course model trained by
``minillm.train``, in float32 and bfloat16 autocast, against the matmul peak measured in the same
run (``minillm.utils.measure_matmul_gflops``), and against a plain PyTorch loop of the same model
(forward, backward, AdamW) without ``minillm.train``: their ratio is the harness's overhead.

Part 2, learning per CPU-minute. The course model with the course BPE tokenizer (2048 ids) and
the same model with a byte-level vocabulary (256 ids) each train for the same wall-clock budget
(5 minutes by default; ``--budget`` shortens it) on the same training plays; both are scored in
bits per byte on the same held-out plays. The BPE model should reach the lower figure: each of its
tokens carries about three bytes, so in the same time it reads about three times as much text.

    python bench/pretrain.py                 # about 12 minutes on a 2-core CPU
    python bench/pretrain.py --budget 60     # a quicker, noisier look
    python bench/pretrain.py --part speed    # part 1 only (part 2 kept from the last run)

Prints a table, writes ``bench/results/pretrain.json`` and ``bench/results/pretrain_bpb.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info, write_results

from minillm.course import COURSE_TRAIN, course_config, course_data
from minillm.data import batch_generator, get_batch, load_split, prepare_corpus, split_documents
from minillm.model import GPT, GPTConfig
from minillm.train import COURSE_DATA, configure_optimizer, train
from minillm.utils import measure_matmul_gflops

RESULTS = Path(__file__).resolve().parent / "results"


def course_gpt(vocab_size: int) -> GPT:
    torch.manual_seed(COURSE_TRAIN["seed"])
    return GPT(GPTConfig.preset("course", vocab_size=vocab_size))


# ---- part 1: speed ----------------------------------------------------------------------------


def harness_speed(train_ids, val_ids, dtype: str, steps: int, peak: float) -> dict:
    """Tokens/s and MFU of minillm.train: the best 5-step window after the first ``steps // 4``.

    The best window, not the mean: on a shared machine other jobs only ever slow a window down.
    """
    with tempfile.TemporaryDirectory() as tmp:
        config = course_config(
            out_dir=tmp,
            max_steps=steps,
            dtype=dtype,
            progress=False,
            eval_interval=steps,
            eval_batches=1,
            log_interval=5,
            checkpoint_interval=0,
            peak_gflops=peak,
        )
        model = course_gpt(2048)
        result = train(config, model=model, train_tokens=train_ids, val_tokens=val_ids)
    windows = [r for r in result.history if r["kind"] == "train" and r["step"] > steps // 4]
    tokens_per_s = max(r["tokens_per_s"] for r in windows)
    return {
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * model.flops_per_token() / (peak * 1e9),
    }


def plain_speed(train_ids, dtype: str, steps: int) -> float:
    """Tokens/s of a bare PyTorch loop of the same model, batch and optimizer (best 5-step window)."""
    model = course_gpt(2048)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    generator = torch.Generator().manual_seed(0)
    batch, block = COURSE_TRAIN["batch_size"], model.config.block_size
    autocast = dtype == "bfloat16"
    best, started = 0.0, time.perf_counter()
    for step in range(1, steps + 1):
        x, y = get_batch(train_ids, batch, block, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 5 == 0:
            if step > steps // 4:
                best = max(best, 5 * batch * block / (time.perf_counter() - started))
            started = time.perf_counter()
    return best


def matmul_peak(dtype: torch.dtype) -> float:
    """Best of three 1-second measurements (other jobs on the machine only lower it)."""
    return max(measure_matmul_gflops(dtype, size=512, seconds=1.0) for _ in range(3))


# ---- part 2: learning per CPU-minute ----------------------------------------------------------


def byte_level_splits() -> dict[str, np.ndarray]:
    """The course's train/val plays as raw UTF-8 bytes (ids 0..255), documents joined by a newline."""
    splits = split_documents(
        prepare_corpus(COURSE_DATA["corpus"]),
        fractions=tuple(COURSE_DATA["fractions"]),
        seed=COURSE_DATA["seed"],
    )
    return {
        name: np.frombuffer("\n".join(d.text for d in docs).encode("utf-8"), dtype=np.uint8)
        for name, docs in splits.items()
    }


@torch.no_grad()
def heldout_bits_per_byte(model: GPT, ids, bytes_per_token: float) -> float:
    """Bits per byte over every non-overlapping window of the held-out ids."""
    model.eval()
    block = model.config.block_size
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    n = (len(ids) - 1) // block
    x, y = ids[: n * block].view(n, block), ids[1 : n * block + 1].view(n, block)
    total = sum(
        model(xb, yb)[1].item() * xb.numel()
        for xb, yb in zip(x.split(64), y.split(64), strict=True)
    )
    return total / (n * block) / math.log(2) / bytes_per_token


def steps_per_second(model: GPT, train_ids, probe_steps: int = 20) -> float:
    optimizer = configure_optimizer(model, learning_rate=1e-4, weight_decay=0.1)
    generator = batch_generator(0)
    batch, block = COURSE_TRAIN["batch_size"], model.config.block_size
    for step in range(probe_steps + 2):
        if step == 2:
            started = time.perf_counter()
        model(*get_batch(train_ids, batch, block, generator=generator))[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return probe_steps / (time.perf_counter() - started)


def learn_for(name, vocab_size, train_ids, val_ids, bytes_per_token, budget_s) -> dict:
    """Train for about ``budget_s`` seconds with the course schedule sized to fit; return the curve."""
    rate = steps_per_second(course_gpt(vocab_size), train_ids)
    max_steps = max(20, int(rate * budget_s * 0.93))  # evaluations take the rest of the budget
    eval_interval = max(1, max_steps // 12)
    with tempfile.TemporaryDirectory() as tmp:
        config = course_config(
            out_dir=tmp,
            max_steps=max_steps,
            progress=False,
            eval_interval=eval_interval,
            eval_batches=8,
            log_interval=eval_interval,
            checkpoint_interval=0,
            peak_gflops=1.0,
            warmup_steps=min(COURSE_TRAIN["warmup_steps"], max_steps // 10),
        )
        model = course_gpt(vocab_size)
        result = train(config, model=model, train_tokens=train_ids, val_tokens=val_ids)
    curve = [
        (r["elapsed_s"], r["val_loss"] / math.log(2) / bytes_per_token)
        for r in result.history
        if r["kind"] == "eval"
    ]
    final = heldout_bits_per_byte(result.model, val_ids, bytes_per_token)
    print(f"  {name}: {max_steps} steps in {result.seconds:.0f} s, held-out {final:.3f} bits/byte")
    return {
        "vocab_size": vocab_size,
        "parameters": result.model.num_params(),
        "steps": max_steps,
        "seconds": result.seconds,
        "tokens_seen": max_steps * COURSE_TRAIN["batch_size"] * model.config.block_size,
        "bytes_per_token": bytes_per_token,
        "curve_seconds_bpb": curve,
        "heldout_bits_per_byte": final,
    }


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, run in curves.items():
        seconds, bpb = zip(*run["curve_seconds_bpb"], strict=True)
        ax.plot(
            np.array(seconds) / 60,
            bpb,
            "o-",
            label=f"{name} (final {run['heldout_bits_per_byte']:.2f})",
        )
    ax.set_xlabel("training time (CPU minutes, wall clock)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title("learning per CPU-minute: course model, BPE vs bytes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


# ---- main -------------------------------------------------------------------------------------


def run_speed(train_ids, val_ids, steps: int) -> dict:
    """Part 1: tokens/s and MFU of minillm.train and of a plain loop, float32 and bfloat16."""
    threads = torch.get_num_threads()
    print(f"== speed: course model, {steps} steps each, {threads} threads")
    speed: dict = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": threads}
    for dtype in ("float32", "bfloat16"):
        peak = matmul_peak(getattr(torch, dtype))
        harness = harness_speed(train_ids, val_ids, dtype, steps, peak)
        plain = plain_speed(train_ids, dtype, steps)
        speed[dtype] = {
            "matmul_peak_gflops": peak,
            "train_tokens_per_s": harness["tokens_per_s"],
            "train_mfu": harness["mfu"],
            "plain_loop_tokens_per_s": plain,
            "overhead_ratio_plain_over_train": plain / harness["tokens_per_s"],
        }
    speed["bf16_over_fp32_tokens_per_s"] = (
        speed["bfloat16"]["train_tokens_per_s"] / speed["float32"]["train_tokens_per_s"]
    )
    print(
        f"{'dtype':<9}{'peak GFLOP/s':>13}{'train tok/s':>13}{'MFU':>7}{'plain tok/s':>13}"
        f"{'plain/train':>12}"
    )
    for dtype in ("float32", "bfloat16"):
        s = speed[dtype]
        print(
            f"{dtype:<9}{s['matmul_peak_gflops']:>13.1f}{s['train_tokens_per_s']:>13,.0f}"
            f"{s['train_mfu']:>7.0%}{s['plain_loop_tokens_per_s']:>13,.0f}"
            f"{s['overhead_ratio_plain_over_train']:>12.2f}"
        )
    print(
        f"bfloat16 / float32 tokens/s: {speed['bf16_over_fp32_tokens_per_s']:.2f} "
        "(targets: MFU >= 30% in float32, bf16 >= 1.5x)"
    )
    return speed


def run_learning(meta: dict, train_ids, val_ids, budget: float) -> dict:
    """Part 2: held-out bits per byte after ``budget`` seconds, BPE model vs byte-level model."""
    # One thread: on a shared 2-core machine two threads contend with other jobs and the speed
    # swings several-fold, which would size the two runs unfairly; one thread is steady.
    torch.set_num_threads(1)
    print(f"== learning per CPU-minute: {budget:.0f} s per model, 1 thread")
    learning: dict = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "budget_s": budget,
        "threads": 1,
    }
    learning["bpe"] = learn_for(
        "BPE 2048",
        meta["vocab_size"],
        train_ids,
        val_ids,
        meta["splits"]["val"]["bytes_per_token"],
        budget,
    )
    byte_splits = byte_level_splits()
    learning["bytes"] = learn_for(
        "bytes 256", 256, byte_splits["train"], byte_splits["val"], 1.0, budget
    )
    plot(
        {"BPE 2048": learning["bpe"], "bytes 256": learning["bytes"]}, RESULTS / "pretrain_bpb.png"
    )
    bpe, raw = (learning[k]["heldout_bits_per_byte"] for k in ("bpe", "bytes"))
    print(
        f"held-out bits per byte after {budget:.0f} s: BPE {bpe:.3f}, bytes {raw:.3f} -> "
        f"lower: {'BPE' if bpe < raw else 'bytes'}"
    )
    return learning


def save_results(out: Path, speed: dict, learning: dict) -> None:
    results = {
        "machine": machine_info(),
        "course_model": GPTConfig.preset("course").to_dict(),
        "course_train": COURSE_TRAIN,
        "speed": speed,
        "learning": learning,
    }
    write_results(out, results)
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per model in part 2")
    parser.add_argument("--speed-steps", type=int, default=60, help="steps per speed measurement")
    parser.add_argument(
        "--part",
        choices=["all", "speed", "learning"],
        default="all",
        help="run one part only; the other part's figures are kept from the previous results "
        "file (each part records when it was measured)",
    )
    args = parser.parse_args(argv)

    data_dir = course_data(verbose=False)
    meta = json.loads((data_dir / "meta.json").read_text())
    train_ids, val_ids = load_split(data_dir, "train"), load_split(data_dir, "val")
    out = RESULTS / "pretrain.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    speed, learning = previous.get("speed", {}), previous.get("learning", {})
    if learning and "budget_s" not in learning and "budget_s" in previous:
        learning["budget_s"] = previous["budget_s"]  # results written before this key moved
    if args.part in ("all", "speed"):
        speed = run_speed(train_ids, val_ids, args.speed_steps)
    if args.part in ("all", "learning"):
        learning = run_learning(meta, train_ids, val_ids, args.budget)
    save_results(out, speed, learning)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
