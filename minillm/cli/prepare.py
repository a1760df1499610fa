"""``minillm prepare``: corpus to tokenizer and token shards (:mod:`minillm.train.shards`)."""

from __future__ import annotations

import argparse

from minillm.train.shards import COURSE_DATA, prepare


def _run_cli(args: argparse.Namespace) -> int:
    prepare(
        args.out_dir,
        corpus=args.corpus,
        vocab_size=args.vocab_size,
        pattern=args.pattern,
        fractions=args.fractions,
        seed=args.seed,
        verbose=True,
        overwrite=args.overwrite,
    )
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm prepare``."""
    parser = subparsers.add_parser(
        "prepare",
        help="corpus -> cleaned splits -> BPE tokenizer -> token shards",
        description="Load and clean a corpus, split it by document, train a BPE tokenizer on "
        "the training split, and write train.bin, val.bin, test.bin, tokenizer.bpe and "
        "meta.json into OUT_DIR (the input of `minillm train`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out-dir", default="data/course", help="folder to write the shards and tokenizer to"
    )
    parser.add_argument(
        "--corpus",
        default=COURSE_DATA["corpus"],
        help="'shakespeare' (bundled), a folder of .txt files, or a text file",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=COURSE_DATA["vocab_size"],
        help="tokenizer size: 256 bytes + merges + <|endoftext|>",
    )
    parser.add_argument(
        "--pattern",
        default=COURSE_DATA["pattern"],
        choices=["gpt2", "gpt4"],
        help="pre-tokenization regex",
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=COURSE_DATA["fractions"],
        metavar=("TRAIN", "VAL", "TEST"),
        help="shares of the documents in each split",
    )
    parser.add_argument("--seed", type=int, default=COURSE_DATA["seed"], help="split seed")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it already holds files"
    )
    parser.set_defaults(handler=_run_cli)
