"""``minillm finetune``: the command line of the fine-tuning recipe (:mod:`minillm.cli.finetune_recipe`)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from minillm.cli.entry import checked_number
from minillm.cli.finetune_recipe import (
    DEFAULT_LR,
    METHODS,
    RESULTS_NAME,
    FinetuneSettings,
    run_finetune,
)
from minillm.finetune.instructions import TASKS
from minillm.utils.environment import MAX_SEED


def _finetune_cli(args: argparse.Namespace) -> int:
    settings = FinetuneSettings(
        **{f.name: getattr(args, f.name) for f in fields(FinetuneSettings) if hasattr(args, f.name)}
    )
    results = run_finetune(
        settings,
        args.out,
        checkpoint=args.checkpoint,
        tokenizer_path=args.tokenizer,
        resume=args.resume,
        overwrite=args.overwrite,
        save_every=args.save_every,
        stop_after=args.stop_after,
    )
    if not results["complete"]:
        print(f"stopped at step {results['step']}; continue with --resume ({args.out})")
        return 0
    if "reward_after" in results:
        b, a = results["reward_before"], results["reward_after"]
        summary = (
            f"reward {b['mean']:.3f} [{b['low']:.3f}, {b['high']:.3f}] -> "
            f"{a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"
        )
    elif "accuracy" in results:
        acc = results["accuracy"]
        summary = f"accuracy {acc['mean']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]"
    else:
        em = results["exact_match"]
        summary = f"exact match {em['mean']:.3f} [{em['low']:.3f}, {em['high']:.3f}]"
    print(
        f"done: {settings.method}, {results['step']} steps in {results['train_seconds']:.0f} s, "
        f"{results['trainable_parameters']:,} of {results['total_parameters']:,} parameters "
        f"trained; held-out {summary}; results in {Path(args.out) / RESULTS_NAME}"
    )
    return 0


def _names(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm finetune``."""

    parser = subparsers.add_parser(
        "finetune",
        help="adapt a model: full, LoRA, SFT, DPO, a classification head or GRPO (resumable)",
        description="Fine-tune the course model (or --checkpoint) on the instruction set made "
        "from the plays (evaluation plays held out) and score it on the held-out plays. "
        "Checkpoints are written atomically to OUT every --save-every steps; --resume continues "
        "exactly where a run stopped. --method dpo needs --checkpoint of a --method sft run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = FinetuneSettings()
    parser.add_argument("--method", choices=METHODS, required=True, help="what to train")
    parser.add_argument("--out", required=True, help="folder for the checkpoint and results")
    parser.add_argument("--checkpoint", default=None, help="base model (default: course model)")
    parser.add_argument("--tokenizer", default=None, help="default: tokenizer.bpe beside it")
    parser.add_argument("--steps", type=checked_number(int, low=1), default=defaults.steps)
    parser.add_argument(
        "--lr",
        type=checked_number(float, low=0, low_open=True, allow_none=True),
        default=None,
        help=f"learning rate (default per method: {DEFAULT_LR})",
    )
    parser.add_argument(
        "--batch-size", type=checked_number(int, low=1, high=4096), default=defaults.batch_size
    )
    parser.add_argument("--warmup", type=checked_number(int, low=0), default=defaults.warmup)
    parser.add_argument(
        "--per-play",
        type=checked_number(int, low=1, high=10_000),
        default=defaults.per_play,
        help="examples per task per play",
    )
    parser.add_argument(
        "--tasks",
        type=_names,
        default=defaults.tasks,
        help=f"comma-separated, of {','.join(TASKS)}",
    )
    parser.add_argument("--max-chars", type=checked_number(int, low=1), default=defaults.max_chars)
    parser.add_argument(
        "--rank", type=checked_number(int, low=1, high=4096), default=defaults.rank, help="LoRA r"
    )
    parser.add_argument(
        "--alpha", type=checked_number(float, low=0, low_open=True), default=defaults.alpha
    )
    parser.add_argument(
        "--targets", type=_names, default=defaults.targets, help="LoRA target modules"
    )
    parser.add_argument(
        "--beta",
        type=checked_number(float, low=0, low_open=True),
        default=defaults.beta,
        help="dpo: preference strength; grpo: KL coefficient",
    )
    parser.add_argument(
        "--group-size",
        type=checked_number(int, low=2, high=1024),
        default=defaults.group_size,
        help="grpo: completions sampled per prompt (--batch-size prompts per step)",
    )
    parser.add_argument(
        "--clip-epsilon",
        type=checked_number(float, low=0, low_open=True),
        default=defaults.clip_epsilon,
        help="grpo: clip range of the probability ratio",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=checked_number(int, low=1),
        default=defaults.max_new_tokens,
        help="grpo: longest completion in tokens",
    )
    parser.add_argument(
        "--temperature",
        type=checked_number(float, low=0, low_open=True),
        default=defaults.temperature,
        help="grpo: sampling temperature",
    )
    parser.add_argument(
        "--train-blocks",
        type=checked_number(int, low=0),
        default=defaults.train_blocks,
        help="classify: also train this many last transformer blocks (0: the head only)",
    )
    parser.add_argument(
        "--classify-chars",
        type=checked_number(int, low=1),
        default=defaults.classify_chars,
        help="classify: longest passage in characters (its own setting: --max-chars is the "
        "generation tasks')",
    )
    parser.add_argument(
        "--classify-per-play",
        type=checked_number(int, low=1, high=10_000),
        default=defaults.classify_per_play,
        help="classify: passages per play",
    )
    parser.add_argument(
        "--seed", type=checked_number(int, low=0, high=MAX_SEED), default=defaults.seed
    )
    parser.add_argument(
        "--n-resamples", type=checked_number(int, low=1), default=defaults.n_resamples
    )
    parser.add_argument(
        "--forgetting-chars",
        type=checked_number(int, low=0),
        default=defaults.forgetting_chars,
        help="score this many characters of held-out pretraining text before and after",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score on two training plays per genre (minillm.finetune.instructions.validation_plays) "
        "instead of the evaluation plays, which are then not read: for choosing settings",
    )
    parser.add_argument("--save-every", type=checked_number(int, low=1), default=50)
    parser.add_argument(
        "--stop-after",
        type=checked_number(int, low=1),
        default=None,
        help="stop after this many steps (then --resume), as an interruption would",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue OUT's checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace OUT's checkpoint")
    parser.set_defaults(handler=_finetune_cli)
