"""``minillm quantize``: write a weight-only quantized copy of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from minillm.quantize.gguf import write_gguf
from minillm.quantize.qtensor import SCHEMES
from minillm.quantize.quantized_model import model_size_bytes, quantize_model, save_quantized
from minillm.train.checkpoint import TOKENIZER_NAME, load_checkpoint
from minillm.utils.outputs import check_output


def _group_size_arg(text: str) -> int | None:
    if text.lower() in ("none", "row", "channel"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"group size must be positive or 'none', got {text}")
    return value


def _quantize_command(args: argparse.Namespace) -> int:
    import shutil

    # checked before any work: never replace a file silently, never the checkpoint being read
    out = check_output(args.out, inputs=[args.checkpoint], overwrite=args.overwrite)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give a .safetensors or .gguf file path")
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.build_model()
    if out.suffix == ".gguf":
        qtype = {8: "q8_0", 4: "q4_0"}.get(args.bits)
        if qtype is None:
            raise ValueError(f"a .gguf output holds Q8_0 or Q4_0: --bits 8 or 4, got {args.bits}")
        write_gguf(model, out, qtype)
        kind = qtype.upper()
    else:
        quantized = quantize_model(
            model,
            args.bits,
            args.group_size,
            scheme=args.scheme,
            per_tensor=args.per_tensor,
            include_embedding=not args.no_embedding,
            pad=args.pad,
        )
        save_quantized(quantized, out, tokenizer_fingerprint=checkpoint.tokenizer_fingerprint)
        kind = f"int{args.bits} {args.scheme}, group size {args.group_size or 'per row'}"
        tokenizer = Path(args.checkpoint).parent / TOKENIZER_NAME
        if tokenizer.is_file() and not (out.parent / TOKENIZER_NAME).exists():
            shutil.copyfile(tokenizer, out.parent / TOKENIZER_NAME)  # for `minillm eval`
    before, after = model_size_bytes(model), out.stat().st_size
    print(f"{out}: {kind}; {after:,} bytes on disk, {after / before:.3f}x the float weights")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``minillm quantize``."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a checkpoint's weights to int8/int4 (safetensors or .gguf)",
        description="Weight-only quantization of a minillm checkpoint. An output ending in "
        ".gguf is written in llama.cpp's Q8_0 (--bits 8) or Q4_0 (--bits 4) blocks.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint from minillm train")
    parser.add_argument("--out", required=True, help="output .safetensors or .gguf file")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (never the checkpoint)"
    )
    parser.add_argument("--bits", type=int, default=8, choices=range(2, 9), metavar="2..8")
    parser.add_argument(
        "--group-size",
        type=_group_size_arg,
        default=None,
        help="columns per scale, or 'none' for one scale per row (default)",
    )
    parser.add_argument("--scheme", default="absmax", choices=SCHEMES)
    parser.add_argument("--per-tensor", action="store_true", help="one scale per matrix")
    parser.add_argument(
        "--no-embedding", action="store_true", help="keep the embedding / output matrix float"
    )
    parser.add_argument(
        "--pad", action="store_true", help="pad rows to whole groups instead of failing"
    )
    parser.set_defaults(handler=_quantize_command)
