"""``minillm eval``: score a checkpoint or a quantized file with the evaluation harness, and the
loader every command shares for those files (:func:`load_for_eval`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from minillm.cli.entry import checked_number
from minillm.evaluate.harness import TASK_NAMES, PerplexityTask, evaluate, resolve_task
from minillm.quantize.quantized_model import (
    check_quantized_tokenizer,
    is_quantized_file,
    load_quantized,
)
from minillm.tokenizer.bpe import BPETokenizer
from minillm.train.checkpoint import (
    CHECKPOINT_NAME,
    TOKENIZER_NAME,
    check_tokenizer,
    load_checkpoint,
)
from minillm.utils.environment import auto_device, ensure_writable_file


def load_for_eval(checkpoint: str | Path, tokenizer_path: str | Path | None = None):
    """The model and tokenizer of a checkpoint written by :func:`minillm.train.save_checkpoint`
    (or of a quantized model written by :func:`minillm.quantize.save_quantized`).

    The tokenizer is ``tokenizer_path``, or ``tokenizer.bpe`` next to the checkpoint, or in the
    data folder the checkpoint was trained from.
    """

    if Path(checkpoint).is_dir():  # a run folder: its checkpoint, as `minillm sample` takes
        inside = Path(checkpoint) / CHECKPOINT_NAME
        if not inside.is_file():
            raise FileNotFoundError(
                f"{checkpoint} is a folder without a {CHECKPOINT_NAME}; give a checkpoint file "
                "(from minillm train) or a quantized file (from minillm quantize)"
            )
        checkpoint = inside
    if is_quantized_file(checkpoint):  # written by `minillm quantize`
        beside = Path(checkpoint).parent / TOKENIZER_NAME
        tokenizer_path = tokenizer_path or beside
        if not Path(tokenizer_path).is_file():
            raise FileNotFoundError(f"no tokenizer at {tokenizer_path}; pass --tokenizer PATH")
        model = load_quantized(checkpoint)  # verified before the tokenizer is even read
        tokenizer = BPETokenizer.load(tokenizer_path)
        check_quantized_tokenizer(checkpoint, tokenizer, tokenizer_path)
        return model, tokenizer
    ckpt = load_checkpoint(checkpoint)
    if tokenizer_path is None:
        candidates = [Path(checkpoint).parent / TOKENIZER_NAME]
        data_dir = (ckpt.train_config or {}).get("data_dir")
        if data_dir:
            candidates.append(Path(data_dir) / TOKENIZER_NAME)
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(
                f"no tokenizer found at {', '.join(map(str, candidates))}; pass --tokenizer PATH"
            )
        tokenizer_path = found[0]
    tokenizer = BPETokenizer.load(tokenizer_path)
    check_tokenizer(ckpt, tokenizer, tokenizer_path)  # another tokenizer would inflate scores
    return ckpt.build_model(), tokenizer


def _eval_command(args: argparse.Namespace) -> int:
    if args.json:  # checked first: a bad path must not cost the whole evaluation
        ensure_writable_file(args.json, "--json target")
    model, tokenizer = load_for_eval(args.checkpoint, args.tokenizer)
    model.to(auto_device(args.device))
    try:
        tasks = [resolve_task(t, tokenizer) for t in args.tasks.split(",") if t]
    except KeyError as err:  # an unknown task name is bad input, reported as one line
        raise ValueError(err.args[0] if err.args else str(err)) from None
    for task in tasks:
        if isinstance(task, PerplexityTask):
            task.stride = args.stride
    report = evaluate(model, tokenizer, tasks, verbose=args.verbose)
    print(report.table())
    if args.json:
        print(f"\nwrote {report.save(args.json)}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``minillm eval``."""

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on a list of tasks",
        description="Evaluate a checkpoint: perplexity and bits per byte, multiple choice, "
        "bias probes, scored generations. Prints a table; --json writes the full report.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a file written by minillm train (or by minillm quantize)",
    )
    parser.add_argument(
        "--tasks",
        default="cloze,bias",
        help=f"comma-separated, from: {', '.join(TASK_NAMES)} (default: cloze,bias)",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer file (default: found with the checkpoint)"
    )
    parser.add_argument(
        "--stride",
        type=checked_number(int, low=1, allow_none=True),
        default=None,
        help="perplexity window stride (default: block size)",
    )
    parser.add_argument("--json", default=None, help="write the full report as JSON here")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or mps (default: the fastest available)"
    )
    parser.add_argument("--verbose", action="store_true", help="print each task as it finishes")
    parser.set_defaults(handler=_eval_command)
