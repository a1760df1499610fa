"""``minillm export``: a Hugging Face model folder (:mod:`minillm.release.hub`)."""

from __future__ import annotations

import argparse
from typing import Any

from minillm.cli.evaluate import load_for_eval
from minillm.course import course_model
from minillm.release.hub import export_hf, push_to_hub
from minillm.release.modelcard import build_card, course_facts, facts_from_model


def _export_command(args: argparse.Namespace) -> int:
    import logging

    for noisy in ("torchao", "torch.utils._pytree"):  # optional kernels transformers may load
        logging.getLogger(noisy).setLevel(logging.ERROR)

    if args.checkpoint == "course":
        model, tokenizer = course_model(verbose=False)
        facts = course_facts(model, tokenizer)
    elif args.checkpoint == "chat":  # the course chat model: its template and <|end|> travel too
        model, tokenizer = course_model("chat", verbose=False)
        facts = facts_from_model(model, tokenizer)
    else:
        model, tokenizer = load_for_eval(args.checkpoint, args.tokenizer)
        facts = facts_from_model(model, tokenizer)
    sizes = export_hf(model, tokenizer, args.out, card=build_card(facts), overwrite=args.overwrite)
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
        help="export a checkpoint as a Hugging Face model folder",
        description="Write config.json, model.safetensors, generation_config.json, "
        "tokenizer.json, tokenizer_config.json, README.md (the model card) and SHA256SUMS: "
        "a folder transformers loads without minillm.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a file written by minillm train, 'course' or 'chat' (the course chat model)",
    )
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer file (default: found with the checkpoint)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--repo", default=None, help="owner/name: list what an upload would send")
    parser.add_argument(
        "--upload", action="store_true", help="with --repo: really upload (needs network, token)"
    )
    parser.set_defaults(handler=_export_command)
