"""``minillm export``: a Hugging Face model folder (:mod:`minillm.release.hub`) or a GGUF file
llama.cpp runs as is (:mod:`minillm.quantize.gguf_export`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from minillm.cli.evaluate import load_for_eval
from minillm.course import course_model
from minillm.quantize.gguf_export import GGUF_QTYPES, export_gguf
from minillm.release.hub import export_hf, push_to_hub
from minillm.release.modelcard import build_card, course_facts, facts_from_model
from minillm.utils.outputs import check_output


def _export_command(args: argparse.Namespace) -> int:
    import logging

    for noisy in ("torchao", "torch.utils._pytree"):  # optional kernels transformers may load
        logging.getLogger(noisy).setLevel(logging.ERROR)

    if args.qtype is not None and args.format != "gguf":
        raise ValueError("--qtype chooses how a GGUF file stores its weights; add --format gguf")
    if args.format == "gguf":
        _check_gguf_args(args)
    inputs = () if args.checkpoint == "course" else (args.checkpoint,)
    check_output(args.out, inputs=inputs, overwrite=args.overwrite)  # before any work
    if args.checkpoint == "course":
        model, tokenizer = course_model(verbose=False)
        facts = course_facts(model, tokenizer)
    elif args.checkpoint == "chat":  # the course chat model: its template and <|end|> travel too
        model, tokenizer = course_model("chat", verbose=False)
        facts = facts_from_model(model, tokenizer)
    else:
        model, tokenizer = load_for_eval(args.checkpoint, args.tokenizer)
        facts = facts_from_model(model, tokenizer)
    if args.format == "gguf":
        return _export_gguf_command(args, model, tokenizer)
    sizes = export_hf(
        model, tokenizer, args.out, card=build_card(facts), overwrite=args.overwrite, inputs=inputs
    )
    for name, size in sizes.items():
        print(f"{size:>12,}  {name}")
    print(f"wrote {len(sizes)} files to {args.out}")
    if args.repo:
        for item in push_to_hub(args.out, args.repo, dry_run=not args.upload):
            print(
                f"{'uploaded' if args.upload else 'would upload'} {item.path} ({item.size:,} bytes)"
            )
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``minillm export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint as a Hugging Face model folder or a GGUF file",
        description="Write config.json, model.safetensors, generation_config.json, "
        "tokenizer.json, tokenizer_config.json, README.md (the model card) and SHA256SUMS: "
        "a folder transformers loads without minillm.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a file written by minillm train, 'course' or 'chat' (the course chat model)",
    )
    parser.add_argument(
        "--out", required=True, help="the folder to write (with --format gguf: the .gguf file)"
    )
    parser.add_argument(
        "--format",
        choices=["hf", "gguf"],
        default="hf",
        help="hf: a Hugging Face folder (default); gguf: one file llama.cpp runs as is",
    )
    parser.add_argument(
        "--qtype",
        choices=list(GGUF_QTYPES),
        default=None,
        help="with --format gguf, how the weights are stored (default q8_0): "
        + "; ".join(f"{k}: {v}" for k, v in GGUF_QTYPES.items()),
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer file (default: found with the checkpoint)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--repo", default=None, help="owner/name: list what an upload would send")
    parser.add_argument(
        "--upload", action="store_true", help="with --repo: really upload (needs network, token)"
    )
    parser.set_defaults(handler=_export_command)


def _check_gguf_args(args: Any) -> None:
    """Refuse ``minillm export`` flags that do not fit ``--format gguf``, before any loading."""
    out = Path(args.out)
    if out.suffix != ".gguf":
        raise ValueError(f"--out must name a .gguf file with --format gguf, got {args.out!r}")
    if args.repo:
        raise ValueError("--repo uploads a Hugging Face folder; export without --format gguf")


def _export_gguf_command(args: Any, model: nn.Module, tokenizer: Any) -> int:
    """``minillm export --format gguf``: write the file and print its size and type."""
    _check_gguf_args(args)
    out = Path(args.out)
    qtype = args.qtype or "q8_0"
    export_gguf(model, tokenizer, out, qtype)
    print(f"{out.stat().st_size:>12,}  {out.name}  ({qtype}: {GGUF_QTYPES[qtype]})")
    print(f"wrote {out}: llama.cpp loads it as is (llama-cli -m FILE; in Python llama_cpp.Llama)")
    return 0
