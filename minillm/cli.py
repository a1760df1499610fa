"""The ``minillm`` command line: every stage of the course outside notebooks.

``minillm doctor`` checks the environment (lesson 00). Each stage module that has a
command exposes ``add_cli(subparsers)``; it is listed in ``_STAGE_MODULES`` below and
registers its own subcommand, so this file stays short.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute subcommands, in the order they appear in ``minillm --help``.
_STAGE_MODULES: list[str] = ["minillm.prepare", "minillm.train_cli", "minillm.evaluate"]


def _doctor(args: argparse.Namespace) -> int:
    from minillm.utils import doctor

    report = doctor(verbose=True, measure=not args.quick)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minillm",
        description="Build a small GPT end to end: data, tokenizer, model, training, evaluation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    doctor_parser = subparsers.add_parser(
        "doctor",
        help="check that this machine can run the course",
        description="Print versions, device, threads, matmul speed and a smoke test; "
        "exit 1 when the course cannot run here.",
    )
    doctor_parser.add_argument(
        "--quick", action="store_true", help="skip the matmul timings (about a second)"
    )
    doctor_parser.set_defaults(handler=_doctor)
    for module_name in _STAGE_MODULES:
        importlib.import_module(module_name).add_cli(subparsers)
    return parser


# Errors that describe bad input rather than bugs: every command reports them as one line.
USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2 for bad input or usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from minillm.train import NonFiniteLossError  # a failed run, reported like bad input

    try:
        return int(args.handler(args) or 0)
    except (*USER_ERRORS, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
