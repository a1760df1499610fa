"""The course recipe sweep: which model and settings learn the most in a fixed CPU budget.

Every candidate trains from scratch on the course training plays for the same wall-clock budget
(``--budget`` seconds of training; the number of steps is calibrated from a short timing run of
the same model, so every candidate gets about the same compute time), then is scored on the whole
course validation split in bits per byte (:func:`minillm.course.split_bits_per_byte`). The
baselines of the same split (unigram and bigram count models, and the best compressor
conditioned on the training text) are printed beside them.

    python bench/course_recipe.py --budget 120 --round shapes      # lesson-05-sized runs
    python bench/course_recipe.py --from-run DIR --name NAME --budget 900   # record a run

The shipped model's budget (about 15 minutes) is too long to calibrate per candidate here: those
runs train with ``minillm.course.train_course_model`` (the shipped recipe, :data:`COURSE_TRAIN`,
with one setting changed) and ``--from-run`` scores the finished run on the validation split and
adds it as a row (its training seconds from the run's log).

Results accumulate in ``bench/results/course_recipe.json`` (one entry per budget and candidate;
a rerun replaces the entries it measured) with a plot ``bench/results/course_recipe.png``.
Run it alone on the machine: other jobs slow training down and make the budgets unequal.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS_DIR, machine_info, write_results

from minillm.course import COURSE_TRAIN, cache_dir, course_config, course_data, split_bits_per_byte
from minillm.data import batch_generator, load_split
from minillm.model import GPT, GPTConfig
from minillm.train import COURSE_DATA, META_FILE, configure_optimizer, prepare, train

RESULTS = RESULTS_DIR / "course_recipe.json"
# issue 9's targets, drawn on the plot: the lesson-05 run (about 2 minutes) and the shipped model
TARGETS = {120.0: ("lesson-05 target 2.30", 2.30), 900.0: ("shipped-model target 2.10", 2.10)}
PLOT = RESULTS_DIR / "course_recipe.png"

# Each candidate: model fields (GPTConfig overrides of the "course" preset), training settings
# (TrainConfig overrides) and optionally a different vocabulary size for the data.
ROUNDS: dict[str, dict[str, dict[str, Any]]] = {
    "shapes": {
        "old-3x96": dict(model=dict(n_layer=3, n_embd=96, n_head=4), train=dict(batch_size=8)),
        "4x128": dict(model=dict(n_layer=4, n_embd=128, n_head=4), train=dict()),
        "4x128-lr6e-3": dict(
            model=dict(n_layer=4, n_embd=128, n_head=4), train=dict(learning_rate=6e-3)
        ),
        "4x192": dict(model=dict(n_layer=4, n_embd=192, n_head=6), train=dict()),
        "6x192": dict(model=dict(n_layer=6, n_embd=192, n_head=6), train=dict()),
        "4x256": dict(model=dict(n_layer=4, n_embd=256, n_head=8), train=dict(learning_rate=2e-3)),
        "4x128-ctx256-b8": dict(
            model=dict(n_layer=4, n_embd=128, n_head=4, block_size=256), train=dict(batch_size=8)
        ),
        "4x128-vocab4096": dict(model=dict(n_layer=4, n_embd=128, n_head=4), vocab=4096),
        "4x128-vocab1024": dict(model=dict(n_layer=4, n_embd=128, n_head=4), vocab=1024),
    },
    # round 2: many small steps won round 1, and a larger vocabulary helped
    "lesson": {
        "3x96-b8-lr6e-3": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4),
            train=dict(batch_size=8, learning_rate=6e-3),
        ),
        "3x96-b8-v4096": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4), train=dict(batch_size=8), vocab=4096
        ),
        "3x96-b8-v4096-lr6e-3": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4),
            train=dict(batch_size=8, learning_rate=6e-3),
            vocab=4096,
        ),
        "3x96-b4-v4096": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4), train=dict(batch_size=4), vocab=4096
        ),
        "4x128-b8-v4096-lr6e-3": dict(
            model=dict(n_layer=4, n_embd=128, n_head=4),
            train=dict(batch_size=8, learning_rate=6e-3),
            vocab=4096,
        ),
        "3x96-b8-v8192": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4), train=dict(batch_size=8), vocab=8192
        ),
    },
    # round 3: batch 4 beat batch 8; smaller batches still, and the learning rate for them
    "small-batch": {
        "3x96-b2-v4096-lr2e-3": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4),
            train=dict(batch_size=2, learning_rate=2e-3),
            vocab=4096,
        ),
        "3x96-b4-v4096-lr2e-3": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4),
            train=dict(batch_size=4, learning_rate=2e-3),
            vocab=4096,
        ),
        "3x96-b4-v4096-lr4e-3": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4),
            train=dict(batch_size=4, learning_rate=4e-3),
            vocab=4096,
        ),
        "4x128-b4-v4096": dict(
            model=dict(n_layer=4, n_embd=128, n_head=4), train=dict(batch_size=4), vocab=4096
        ),
    },
    # round 4: which size for a longer budget (the two winners of rounds 1-3, scaled)
    "scale": {
        "3x96-b4-v4096": dict(
            model=dict(n_layer=3, n_embd=96, n_head=4), train=dict(batch_size=4), vocab=4096
        ),
        "4x128-b4-v4096": dict(
            model=dict(n_layer=4, n_embd=128, n_head=4), train=dict(batch_size=4), vocab=4096
        ),
    },
}


def data_for(vocab: int | None) -> Path:
    """The course data folder, or the same plays with another vocabulary size (cached)."""
    if vocab is None or vocab == COURSE_DATA["vocab_size"]:
        return course_data(verbose=False)
    folder = cache_dir() / f"bench-data-vocab{vocab}"
    if not (folder / META_FILE).is_file():
        prepare(folder, verbose=False, **{**COURSE_DATA, "vocab_size": vocab})
    return folder


def settings_for(candidate: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    meta = json.loads((data_dir / META_FILE).read_text())
    base = {**COURSE_TRAIN, "warmup_steps": 30, "batch_size": 16, "learning_rate": 3e-3}
    model = {**candidate.get("model", {}), "vocab_size": meta["vocab_size"]}
    return {**base, **candidate.get("train", {}), "model_overrides": model}


def tokens_per_second(settings: dict[str, Any], data_dir: Path, steps: int = 12) -> float:
    """Training tokens/s of this candidate: the median of ``steps`` timed optimizer steps."""
    from minillm.data import get_batch

    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("course", **settings["model_overrides"]))
    optimizer = configure_optimizer(model, learning_rate=1e-3, weight_decay=0.1)
    tokens = load_split(data_dir, "train")
    block, batch = model.config.block_size, settings["batch_size"]
    generator = batch_generator(0)
    times = []
    for _ in range(steps + 3):
        x, y = get_batch(tokens, batch, block, generator=generator)
        start = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    times = sorted(times[3:])
    return batch * block / times[len(times) // 2]


def run_candidate(name: str, candidate: dict[str, Any], budget: float) -> dict[str, Any]:
    data_dir = data_for(candidate.get("vocab"))
    settings = settings_for(candidate, data_dir)
    speed = tokens_per_second(settings, data_dir)
    block = settings["model_overrides"].get("block_size", 128)
    per_step = settings["batch_size"] * block
    steps = max(50, int(budget * speed / per_step))
    settings.update(
        max_steps=steps,
        warmup_steps=max(10, steps // 30),
        eval_interval=steps,
        eval_batches=4,
        log_interval=max(1, steps // 50),
        checkpoint_interval=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = course_config(
            **settings, data_dir=str(data_dir), out_dir=tmp, device="cpu", progress=False
        )
        result = train(config)
        curve = [
            (r["step"], r["loss"], r.get("elapsed_s"))
            for r in result.history
            if r["kind"] == "train"
        ]
    score = split_bits_per_byte(result.model, data_dir)
    params = sum(p.numel() for p in result.model.parameters())
    row = {
        "name": name,
        "budget_s": budget,
        "train_seconds": round(result.seconds, 1),
        "steps": steps,
        "tokens": steps * per_step,
        "tokens_per_s": round(speed),
        "threads": torch.get_num_threads(),
        "params": params,
        "settings": settings,
        "val_bits_per_byte": round(score["bits_per_byte"], 4),
        "val_nats_per_token": round(score["nats_per_token"], 4),
        "curve": curve,
    }
    print(
        f"{name:20s} {params / 1e6:5.2f}M  {speed:7.0f} tok/s  {steps:5d} steps  "
        f"{result.seconds:5.0f} s  val {score['bits_per_byte']:.4f} bits/byte",
        flush=True,
    )
    return row


def row_from_run(run_dir: Path, name: str, budget: float) -> dict[str, Any]:
    """A results row for a run trained elsewhere: its ``out_dir``, or the shipped model's folder."""
    from minillm.train import CHECKPOINT_NAME, load_checkpoint, read_log

    card = run_dir / "card.json"  # the shipped model's folder (minillm/assets/course_model)
    if card.is_file():
        shipped = json.loads(card.read_text())
        config, log, weights = (
            shipped["train_config"],
            shipped["log"],
            run_dir / "model.safetensors",
        )
        data_dir = course_data(verbose=False)
    else:
        config = json.loads((run_dir / "train_config.json").read_text())
        log, weights, data_dir = read_log(run_dir), run_dir / CHECKPOINT_NAME, config["data_dir"]
    model = load_checkpoint(weights).build_model().eval()
    score = split_bits_per_byte(model, data_dir)
    block = model.config.block_size
    steps = config["max_steps"]
    keep = ("max_steps", "batch_size", "learning_rate", "warmup_steps", "weight_decay", "seed")
    seconds = max(r.get("elapsed_s", 0.0) for r in log)
    tokens = steps * config["batch_size"] * block
    return {
        "name": name,
        "budget_s": budget,
        "train_seconds": round(seconds, 1),
        "steps": steps,
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "settings": {
            **{k: config[k] for k in keep},
            "model_overrides": config.get("model_overrides", {}),
        },
        "source": "minillm.course.train_course_model, recorded with --from-run",
        "val_bits_per_byte": round(score["bits_per_byte"], 4),
        "val_nats_per_token": round(score["nats_per_token"], 4),
        "curve": [(r["step"], r["loss"], r.get("elapsed_s")) for r in log if r["kind"] == "train"],
    }


def plot(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget_s"] for r in results})
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        rows = sorted(
            (r for r in results if r["budget_s"] == budget), key=lambda r: r["val_bits_per_byte"]
        )
        ax.barh([r["name"] for r in rows], [r["val_bits_per_byte"] for r in rows])
        low = min(r["val_bits_per_byte"] for r in rows)
        target = TARGETS.get(budget)
        if target is not None:
            low = min(low, target[1])
        ax.set_xlim(low - 0.1, max(r["val_bits_per_byte"] for r in rows) + 0.05)
        ax.invert_yaxis()
        if target is not None:
            ax.axvline(target[1], color="C3", linestyle="--", label=target[0])
            ax.legend(loc="lower right")
        ax.set_xlabel("validation bits per byte (lower is better)")
        ax.set_title(f"course recipe sweep: {budget:.0f} s of training each")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    parser.add_argument("--round", choices=sorted(ROUNDS), default="shapes")
    parser.add_argument("--only", nargs="*", help="run only these candidates of the round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file to add to")
    parser.add_argument("--from-run", type=Path, help="record this finished run (see above)")
    parser.add_argument("--name", help="the row name for --from-run")
    args = parser.parse_args()
    if not math.isfinite(args.budget) or args.budget <= 0:
        parser.error("--budget must be a positive number of seconds")
    if args.from_run is not None and not args.name:
        parser.error("--from-run needs --name")
    if args.threads:
        torch.set_num_threads(args.threads)
    previous = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results = previous.get("results", [])
    if args.from_run is not None:
        row = row_from_run(args.from_run, args.name, args.budget)
        print(f"{args.name}: val {row['val_bits_per_byte']:.4f} bits/byte", flush=True)
        results = [
            r for r in results if not (r["name"] == args.name and r["budget_s"] == args.budget)
        ]
        results.append(row)
        write_results(
            args.results, {"machine": previous.get("machine", machine_info()), "results": results}
        )
        if args.results == RESULTS:
            plot(results)
        return
    for name, candidate in ROUNDS[args.round].items():
        if args.only and name not in args.only:
            continue
        row = run_candidate(name, candidate, args.budget)
        results = [r for r in results if not (r["name"] == name and r["budget_s"] == args.budget)]
        results.append(row)
        write_results(args.results, {"machine": machine_info(), "results": results})
    if args.results == RESULTS:
        plot(results)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
