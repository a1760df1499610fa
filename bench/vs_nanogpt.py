"""minillm beside nanoGPT on tiny-shakespeare: the same text, the same split, the same wall time.

1. nanoGPT's own CPU recipe for shakespeare_char (the command in its README), run unmodified as an
   external program in a temporary copy of a nanoGPT checkout, after its own
   ``data/shakespeare_char/prepare.py`` (given the text file as ``input.txt``, so it downloads
   nothing). Its log gives the validation losses and the wall time.
2. minillm's pipeline on the same first 90% / last 10% of the characters, for the same wall time
   (``--budget`` overrides it): a BPE tokenizer trained on the training part (its time counts),
   then :func:`minillm.train.train` with the recipe of :data:`minillm.course.LESSON_TRAIN`, its
   ``max_steps`` calibrated from a few timed steps so that training ends inside the budget.
3. Both scored in bits per byte on the whole validation text, and a table with the ratios.

Nothing is downloaded and nothing of nanoGPT enters this repository: the checkout and the text
file are arguments.

    python bench/vs_nanogpt.py --nanogpt PATH/TO/nanoGPT --text PATH/TO/tinyshakespeare.txt
    python bench/vs_nanogpt.py --nanogpt ... --text ... --nanogpt-iters 30 --budget 20 --out /tmp/x.json

The second line is a smoke test (30 nanoGPT iterations, 20 s for minillm). Writes
``bench/results/vs_nanogpt.json`` (or ``--out``). Run the full comparison alone on the machine:
both sides are timed, and other jobs slow them unequally.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import math
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS_DIR, machine_info, write_results

RESULTS = RESULTS_DIR / "vs_nanogpt.json"
TINY_SHAKESPEARE_BYTES = 1_115_394
TRAIN_FRACTION = 0.9  # nanoGPT's prepare.py: the first 90% of the characters train, the rest val
NANOGPT_FILES = (
    "train.py",
    "model.py",
    "configurator.py",
    "config/train_shakespeare_char.py",
    "data/shakespeare_char/prepare.py",
)
# nanoGPT's README, "I only have a macbook": its CPU recipe for shakespeare_char, verbatim.
NANOGPT_ITERS = 2000
NANOGPT_BATCH, NANOGPT_BLOCK = 12, 64
NANOGPT_EVAL_INTERVAL = 250  # from config/train_shakespeare_char.py
NANOGPT_OUT = "out-shakespeare-char"
MIN_STEPS = 10  # minillm trains at least this many steps, even when the budget is already spent

EVAL_LINE = re.compile(r"^step (\d+): train loss ([0-9.]+), val loss ([0-9.]+)")
ITER_LINE = re.compile(r"^iter (\d+): loss ([0-9.]+), time ([0-9.]+)ms")
PARAMS_LINE = re.compile(r"^number of parameters: ([0-9.]+)M")


class InputError(Exception):
    """A missing or wrong argument; reported as one line, exit status 2."""


# --- Arguments -------------------------------------------------------------------------------


def check_nanogpt(path: Path | None) -> None:
    """Raise :class:`InputError` unless ``path`` is a nanoGPT checkout with the files we run."""
    if path is None:
        raise InputError("--nanogpt PATH is required: a checkout of karpathy/nanoGPT")
    if not path.is_dir():
        raise InputError(f"--nanogpt {path}: no such folder (give a checkout of karpathy/nanoGPT)")
    missing = [name for name in NANOGPT_FILES if not (path / name).is_file()]
    if missing:
        raise InputError(
            f"--nanogpt {path} is not a nanoGPT checkout: it lacks {', '.join(missing)}"
        )


def read_text(path: Path | None) -> str:
    """The tiny-shakespeare text; :class:`InputError` when missing, empty or not ASCII."""
    if path is None:
        raise InputError("--text PATH is required: tiny-shakespeare's input.txt")
    if not path.is_file():
        raise InputError(f"--text {path}: no such file (give tiny-shakespeare's input.txt)")
    data = path.read_bytes()
    if len(data) < 10_000:
        raise InputError(f"--text {path} holds {len(data)} bytes; tiny-shakespeare has 1,115,394")
    try:
        text = data.decode("ascii")  # one character = one byte, so nats/char = nats/byte
    except UnicodeDecodeError as err:
        raise InputError(
            f"--text {path} is not ASCII (byte {err.start}); tiny-shakespeare is"
        ) from None
    if len(data) != TINY_SHAKESPEARE_BYTES:
        print(
            f"note: {path} holds {len(data):,} bytes, tiny-shakespeare {TINY_SHAKESPEARE_BYTES:,}"
        )
    return text


def parse_assignments(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """``["n_layer=4", "learning_rate=6e-3"]`` -> ``{"n_layer": 4, "learning_rate": 0.006}``."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} n_layer=4")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw  # a plain string, e.g. norm=rmsnorm
        values[key.strip()] = value
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # required, but checked in main() so that a missing one is reported in one line, like the rest
    parser.add_argument("--nanogpt", type=Path, help="a karpathy/nanoGPT checkout (required)")
    parser.add_argument("--text", type=Path, help="tiny-shakespeare's input.txt (required)")
    parser.add_argument(
        "--budget", type=float, help="minillm's seconds (default: nanoGPT's measured wall time)"
    )
    parser.add_argument(
        "--nanogpt-iters",
        type=int,
        help=f"replace nanoGPT's max_iters/lr_decay_iters={NANOGPT_ITERS} (smoke tests); its "
        f"eval_interval becomes min({NANOGPT_EVAL_INTERVAL}, N) so the last step is evaluated",
    )
    parser.add_argument("--vocab-size", type=int, help="BPE size (default: the course data's)")
    parser.add_argument(
        "--model-override",
        action="append",
        metavar="KEY=VALUE",
        help="a GPTConfig field for minillm's model, e.g. n_layer=4 (repeatable)",
    )
    parser.add_argument(
        "--train-override",
        action="append",
        metavar="KEY=VALUE",
        help="a TrainConfig setting for minillm's run, e.g. learning_rate=6e-3 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder")
    return parser


# --- Scoring (both models, one definition) ---------------------------------------------------


@torch.no_grad()
def stream_nll(
    logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    block: int,
    batch: int = 32,
) -> tuple[float, int]:
    """Summed cross-entropy (nats) of a whole token stream and how many tokens it scored.

    The definition of :func:`minillm.course.split_bits_per_byte`: consecutive windows of
    ``block`` predictions overlapping by one token, so every token but the very first is
    predicted once, from the tokens before it in its window. ``logits_of(x, y)`` returns the
    logits (B, T, vocab) for inputs ``x``; ``y`` (the targets) is there for models that only
    return every position's logits when given targets (nanoGPT's).
    """
    rows = [tokens[s : s + block + 1] for s in range(0, len(tokens) - 1, block)]
    full = [row for row in rows if len(row) == block + 1]
    groups = [torch.stack(full[i : i + batch]) for i in range(0, len(full), batch)]
    groups += [row[None] for row in rows if len(row) < block + 1]  # the ragged last window
    total, counted = 0.0, 0
    for group in groups:
        x, y = group[:, :-1].contiguous(), group[:, 1:].contiguous()  # nanoGPT calls .view
        logits = logits_of(x, y).float()
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        counted += y.numel()
    return total, counted


def score(total_nats: float, counted: int, n_bytes: int) -> dict[str, float | int]:
    return {
        "bits_per_byte": total_nats / math.log(2) / n_bytes,
        "nats_per_char": total_nats / n_bytes,  # ASCII: one character is one byte
        "nats_per_token": total_nats / counted,
        "tokens_scored": counted,
        "bytes": n_bytes,
    }


# --- nanoGPT, run as an external program -----------------------------------------------------


def nanogpt_command(iters: int | None) -> list[str]:
    """nanoGPT's README CPU command (with ``iters`` replacing its 2000 for smoke tests)."""
    n = NANOGPT_ITERS if iters is None else iters
    command = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        f"--block_size={NANOGPT_BLOCK}",
        f"--batch_size={NANOGPT_BATCH}",
        "--n_layer=4",
        "--n_head=4",
        "--n_embd=128",
        f"--max_iters={n}",
        f"--lr_decay_iters={n}",
        "--dropout=0.0",
    ]
    if iters is not None and iters < NANOGPT_EVAL_INTERVAL:
        command.append(f"--eval_interval={iters}")
    return command


def run_program(command: list[str], cwd: Path, echo: Callable[[str], bool]) -> tuple[float, list]:
    """Run ``command`` in ``cwd``; its seconds and output lines (echoing those ``echo`` picks).

    stderr joins stdout (one pipe, so a chatty stderr cannot fill up and stall the child).
    """
    started = time.perf_counter()
    with subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if echo(lines[-1]):
                print(f"  nanoGPT | {lines[-1]}", flush=True)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"{' '.join(command[1:3])} failed ({process.returncode}):\n{tail}")
    return seconds, lines


def progress_line(line: str) -> bool:
    """nanoGPT's evaluations, and every 100th iteration, are echoed while it runs."""
    m = ITER_LINE.match(line)
    return bool(EVAL_LINE.match(line)) or bool(m and int(m[1]) % 100 == 0)


def parse_log(lines: list[str]) -> dict[str, Any]:
    """The evaluations, training iterations and parameter count in nanoGPT's stdout."""
    evals = [
        {"step": int(m[1]), "train_loss": float(m[2]), "val_loss": float(m[3])}
        for m in map(EVAL_LINE.match, lines)
        if m
    ]
    iters = [m for m in map(ITER_LINE.match, lines) if m]
    params = [float(m[1]) for m in map(PARAMS_LINE.match, lines) if m]
    if not evals or not iters:
        raise RuntimeError("nanoGPT's output has no 'step N: ... val loss' or 'iter N:' line")
    return {
        "evals": evals,
        "steps": len(iters),
        "params_printed_millions": params[0] if params else None,
    }


def copy_checkout(source: Path, target: Path, text_path: Path) -> None:
    """A clean copy of the checkout (no data, runs or checkpoints) with the text as input.txt."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "out*", "*.bin", "*.pkl", "*.pt")
    shutil.copytree(source, target, ignore=ignore)
    data = target / "data" / "shakespeare_char"
    (data / "input.txt").unlink(missing_ok=True)
    # prepare.py downloads only `if not os.path.exists(input_file_path)`: with this file it reads it
    shutil.copyfile(text_path, data / "input.txt")


def run_nanogpt(checkout: Path, text: str, text_path: Path, work: Path, iters: int | None):
    """Prepare the data and train with nanoGPT's own scripts; its figures as a dict."""
    copy = work / "nanoGPT"
    copy_checkout(checkout, copy, text_path)
    print("nanoGPT: data/shakespeare_char/prepare.py", flush=True)
    prepare_s, prep_lines = run_program(
        [sys.executable, "data/shakespeare_char/prepare.py"], copy, lambda line: False
    )
    expected = f"length of dataset in characters: {len(text):,}"
    if expected not in prep_lines:  # it read our file, not something it downloaded
        raise RuntimeError(f"prepare.py did not report {expected!r}: {prep_lines[:2]}")
    command = nanogpt_command(iters)
    print(f"nanoGPT: {' '.join(['python', *command[1:]])}", flush=True)
    train_s, lines = run_program(command, copy, progress_line)
    log = parse_log(lines)
    best = min(log["evals"], key=lambda e: e["val_loss"])
    return copy, {
        "command": " ".join(["python", *command[1:]]),
        "prepare_seconds": round(prepare_s, 2),
        "train_seconds": round(train_s, 2),
        "seconds": round(prepare_s + train_s, 2),
        **log,
        "chars_seen": log["steps"] * NANOGPT_BATCH * NANOGPT_BLOCK,
        "best_step": best["step"],
        "best_val_nats_per_char_estimate": best["val_loss"],
        "best_val_bits_per_byte_estimate": best["val_loss"] / math.log(2),
    }


def score_nanogpt_checkpoint(copy: Path, n_val_bytes: int) -> dict[str, Any]:
    """nanoGPT's saved checkpoint (its best evaluation) on the whole validation text.

    nanoGPT's own model class is imported from the temporary copy under a private module name
    (``bench/model.py`` would otherwise shadow its ``model``).
    """
    spec = importlib.util.spec_from_file_location("nanogpt_model", copy / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The checkpoint holds only tensors and plain containers (model_args, config, optimizer
    # state), so the safe weights_only loader reads it; it is the file nanoGPT just wrote here.
    checkpoint = torch.load(copy / NANOGPT_OUT / "ckpt.pt", map_location="cpu", weights_only=True)
    model = module.GPT(module.GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    model.eval()
    val = np.fromfile(copy / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
    tokens = torch.from_numpy(val.astype(np.int64))
    total, counted = stream_nll(
        lambda x, y: model(x, y)[0], tokens, checkpoint["model_args"]["block_size"]
    )
    return {
        "checkpoint_step": int(checkpoint["iter_num"]),
        "params": sum(p.numel() for p in model.parameters()),
        **score(total, counted, n_val_bytes),
    }


# --- minillm, in this process ----------------------------------------------------------------


def lesson_recipe() -> tuple[str, dict[str, Any]]:
    """Lesson 05's recipe (:data:`minillm.course.LESSON_TRAIN`), read at run time."""
    from minillm import course

    if hasattr(course, "LESSON_TRAIN"):
        return "minillm.course.LESSON_TRAIN", dict(course.LESSON_TRAIN)
    return "minillm.course.COURSE_TRAIN (this minillm has no LESSON_TRAIN)", dict(
        course.COURSE_TRAIN
    )


def seconds_per_step(config, train_ids: np.ndarray, steps: int = 8) -> float:
    """Median seconds of one optimizer step of this run's model (throwaway weights)."""
    from minillm.data import batch_generator, get_batch
    from minillm.train import build_model, configure_optimizer

    model = build_model(config, None)
    optimizer = configure_optimizer(
        model, learning_rate=1e-4, weight_decay=config.weight_decay, betas=(0.9, 0.95)
    )
    block = config.block_size or model.config.block_size
    generator = batch_generator(0)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        for _ in range(config.grad_accum_steps):
            x, y = get_batch(train_ids, config.batch_size, block, generator=generator)
            _, loss = model(x, y)
            (loss / config.grad_accum_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))  # the first steps warm up the allocator


def minillm_config(recipe: dict[str, Any], args, vocab_size: int, out_dir: Path, steps: int):
    from minillm.train import TrainConfig

    settings = {**recipe, **parse_assignments(args.train_override, "--train-override")}
    model = {
        **settings.get("model_overrides", {}),
        **parse_assignments(args.model_override, "--model-override"),
        "vocab_size": vocab_size,
    }
    return TrainConfig.from_dict(
        {
            **settings,
            "model_overrides": model,
            "max_steps": steps,
            "warmup_steps": min(settings.get("warmup_steps", 30), max(1, steps // 10)),
            "eval_interval": steps,
            "eval_batches": 4,
            "log_interval": max(1, steps // 20),
            "checkpoint_interval": 0,
            "data_dir": str(out_dir),
            "out_dir": str(out_dir),
            "device": "cpu",  # nanoGPT's recipe is a CPU one
            "progress": False,
            "overwrite": True,
            "peak_gflops": 1.0,  # MFU is not reported: skip the matmul measurement
        }
    )


def check_minillm_settings(args) -> None:
    """Raise :class:`InputError` now, not after nanoGPT's run, when an override is wrong."""
    from minillm.model import GPTConfig

    _, recipe = lesson_recipe()
    try:
        config = minillm_config(recipe, args, args.vocab_size or 512, Path("unused"), 100)
        GPTConfig.preset(config.model_preset, **config.model_overrides)
    except (ValueError, TypeError) as err:
        raise InputError(f"minillm's settings: {err}") from None


def run_minillm(text: str, budget: float, args, work: Path) -> dict[str, Any]:
    """Tokenizer, calibration and training inside ``budget`` seconds; scored on the whole val text."""
    from minillm.tokenizer import BPETokenizer
    from minillm.train import COURSE_DATA, train

    recipe_name, recipe = lesson_recipe()
    split = int(len(text) * TRAIN_FRACTION)
    train_text, val_text = text[:split], text[split:]
    requested = parse_assignments(args.model_override, "--model-override")
    vocab = (
        args.vocab_size
        or requested.get("vocab_size")
        or recipe.get("model_overrides", {}).get("vocab_size")
        or COURSE_DATA["vocab_size"]
    )
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(train_text, vocab, pattern=COURSE_DATA["pattern"])
    tokenizer_s = time.perf_counter() - started
    encoder = tokenizer.to_tiktoken()
    train_ids = np.asarray(encoder.encode_ordinary(train_text), dtype=np.int64)
    val_ids = np.asarray(encoder.encode_ordinary(val_text), dtype=np.int64)
    probe = minillm_config(recipe, args, tokenizer.vocab_size, work / "minillm", 100)
    step_s = seconds_per_step(probe, train_ids)
    before_train = time.perf_counter() - started
    # two evaluations of 4 forward-only batches cost about 3 steps
    steps = max(MIN_STEPS, int((budget - before_train) / step_s) - 3)
    config = minillm_config(recipe, args, tokenizer.vocab_size, work / "minillm", steps)
    print(
        f"minillm: tokenizer {tokenizer_s:.1f} s, {step_s * 1000:.0f} ms/step -> {steps} steps "
        f"in the {budget - before_train:.1f} s left of {budget:.1f} s",
        flush=True,
    )
    result = train(config, train_tokens=train_ids, val_tokens=val_ids)
    total_s = time.perf_counter() - started
    model = result.model.eval()
    total, counted = stream_nll(
        lambda x, y: model(x)[0], torch.from_numpy(val_ids), model.config.block_size
    )
    block = config.block_size or model.config.block_size
    tokens_seen = steps * config.batch_size * block * config.grad_accum_steps
    return {
        "recipe": recipe_name,
        "settings": config.to_dict() | {"data_dir": None, "out_dir": None},
        "budget_seconds": round(budget, 2),
        "tokenizer_seconds": round(tokenizer_s, 2),
        "seconds_before_training": round(before_train, 2),
        "train_seconds": round(result.seconds, 2),
        "seconds": round(total_s, 2),
        "over_budget": total_s > budget * 1.05,
        "steps": steps,
        "vocab_size": tokenizer.vocab_size,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_seen": tokens_seen,
        "train_bytes_per_token": len(train_text) / len(train_ids),
        "chars_seen_approx": round(tokens_seen * len(train_text) / len(train_ids)),
        "val": score(total, counted, len(val_text)),
    }


# --- Report ----------------------------------------------------------------------------------


def ratios(nano: dict[str, Any], mini: dict[str, Any]) -> dict[str, float | None]:
    full = nano.get("full_val") or {}
    mini_bpb = mini["val"]["bits_per_byte"]
    return {
        "seconds_minillm_over_nanogpt": mini["seconds"] / nano["seconds"],
        "bpb_minillm_over_nanogpt_estimate": mini_bpb / nano["best_val_bits_per_byte_estimate"],
        "bpb_minillm_over_nanogpt_full_val": (
            mini_bpb / full["bits_per_byte"] if full.get("bits_per_byte") else None
        ),
    }


def print_table(nano: dict[str, Any], mini: dict[str, Any], ratio: dict[str, Any]) -> None:
    full = nano.get("full_val") or {}
    params = full.get("params") or (nano["params_printed_millions"] or 0) * 1e6
    mini_val = mini["val"]

    def fmt(value: Any, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    rows = [
        ("seconds", nano["seconds"], mini["seconds"], ".1f"),
        ("val bits/byte, nanoGPT's estimate", nano["best_val_bits_per_byte_estimate"], None, ".4f"),
        ("val bits/byte, whole text", full.get("bits_per_byte"), mini_val["bits_per_byte"], ".4f"),
        ("val nats/char, whole text", full.get("nats_per_char"), mini_val["nats_per_char"], ".4f"),
        ("parameters", params, mini["params"], ",.0f"),
        ("optimizer steps", nano["steps"], mini["steps"], ",d"),
        ("tokens seen", nano["chars_seen"], mini["tokens_seen"], ",d"),
        ("characters seen", nano["chars_seen"], mini["chars_seen_approx"], ",d"),
    ]
    print(f"\n{'':36s} {'nanoGPT (chars)':>16s} {'minillm (BPE)':>16s} {'minillm/nanoGPT':>16s}")
    for label, a, b, spec in rows:
        r = b / a if a and b is not None else None
        print(f"{label:36s} {fmt(a, spec):>16s} {fmt(b, spec):>16s} {fmt(r, '.3f'):>16s}")
    print(
        f"minillm whole-val bits/byte over nanoGPT's own estimate: "
        f"{ratio['bpb_minillm_over_nanogpt_estimate']:.3f}"
    )
    if mini["over_budget"]:
        print(
            f"warning: minillm took {mini['seconds']:.1f} s, over its {mini['budget_seconds']} s "
            "budget by more than 5% (a busy machine, or a budget shorter than its set-up)"
        )


NOTES = [
    "nanoGPT's best_val_*_estimate is its own figure: eval_iters=20 batches of 12 random 64-char "
    "windows at each evaluation, the best over its evaluations; full_val scores its saved "
    "checkpoint (the step of its best evaluation) on the whole validation text.",
    "minillm's val is over the whole validation text, with the same definition as full_val and "
    "minillm.course.split_bits_per_byte (consecutive windows overlapping by one token, every "
    "token but the first scored, summed nats / ln 2 / bytes), computed here directly.",
    "nanoGPT's seconds: its prepare.py and train.py as subprocesses (interpreter start and torch "
    "import included). minillm's seconds: from the start of tokenizer training (on the first "
    "90% only) through encoding, step-time calibration and train(), in this process; the final "
    "whole-val scoring of either model is not counted.",
    "Split: nanoGPT's, the first 90% of the characters train, the last 10% validate. The text is "
    "ASCII, so one character is one byte and bits per byte = nats per char / ln 2.",
]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_nanogpt(args.nanogpt)
        text = read_text(args.text)
        if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
            raise InputError(f"--budget must be a positive number of seconds, got {args.budget}")
        if args.nanogpt_iters is not None and args.nanogpt_iters < 1:
            raise InputError(f"--nanogpt-iters must be >= 1, got {args.nanogpt_iters}")
        check_minillm_settings(args)
    except InputError as err:
        print(f"vs_nanogpt: error: {err}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="vs_nanogpt-"))
    try:
        copy, nano = run_nanogpt(args.nanogpt, text, args.text, work, args.nanogpt_iters)
        try:
            nano["full_val"] = score_nanogpt_checkpoint(copy, len(text) - int(len(text) * 0.9))
        except (OSError, KeyError, RuntimeError, pickle.UnpicklingError) as err:  # optional part
            print(f"note: nanoGPT's checkpoint could not be scored ({err})")
            nano["full_val"] = None
        budget = args.budget if args.budget is not None else nano["seconds"]
        mini = run_minillm(text, budget, args, work)
    except (RuntimeError, ValueError, TypeError) as err:
        print(f"vs_nanogpt: failed: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep_tmp:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ratio = ratios(nano, mini)
    print_table(nano, mini, ratio)
    source = {name: sha256(args.nanogpt / name) for name in ("train.py", "model.py")}
    write_results(
        args.out,
        {
            "machine": machine_info(),
            "text": {"bytes": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()},
            "nanogpt_source_sha256": source,
            "nanogpt": nano,
            "minillm": mini,
            "ratios": ratio,
            "notes": NOTES,
        },
    )
    print(f"wrote {args.out}")
    return 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
