"""The ``minillm`` command line: every stage of the course outside notebooks.

``minillm doctor`` checks the environment (lesson 00). Each command module in
:mod:`minillm.cli` exposes ``add_cli(subparsers)``; it is listed in ``_STAGE_MODULES`` below and
registers its own subcommands, so this file stays short.

The rule for errors: nothing a user can type ends in a Python traceback. Bad input (a flag,
a file, an environment variable) is reported as one line starting with ``error:`` and exit
status 2; a closed output pipe (``minillm sample | head -1``) ends quietly. Set
``MINILLM_DEBUG=1`` to see the traceback of a reported error.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from minillm.train.loop import NonFiniteLossError
from minillm.utils.environment import doctor

# Modules that contribute subcommands, in the order they appear in ``minillm --help``.
_STAGE_MODULES: list[str] = [
    "minillm.cli.prepare",
    "minillm.cli.train",
    "minillm.cli.finetune",
    "minillm.cli.evaluate",
    "minillm.cli.quantize",
    "minillm.cli.serve",
    "minillm.cli.export",
]


def _doctor(args: argparse.Namespace) -> int:
    report = doctor(verbose=True, measure=not args.quick)
    return 0 if report.ok else 1


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one ``error:`` line (exit 2), not a usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def checked_number(
    kind: type = float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: bool = False,
) -> Callable[[str], object]:
    """An argparse ``type=`` that accepts finite numbers in a range (and "none" if allowed).

    ``low_open`` excludes ``low`` itself (for "> 0"). NaN and infinity are always refused.
    """

    def parse(text: str) -> object:
        if allow_none and text.strip().lower() == "none":
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n int' if kind is int else ' number'}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}")
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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


def _one_line(err: BaseException) -> str:
    """The error as one line: OS errors name the file, memory errors say what to lower."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {user_path(err.filename)}" if err.filename else ""
        return f"{err.strerror}{where}{_OS_ADVICE.get(err.errno, '')}"
    if isinstance(err, MemoryError) or _is_out_of_memory(err):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"out of memory ({first[:160]}); lower --batch-size or --block-size, or use a "
            "smaller model"
        )
    return " ".join(str(err).split()) or type(err).__name__


_OS_ADVICE = {
    errno.ENOSPC: "; free some space or write somewhere else (nothing was replaced: files are "
    "written whole, then renamed)",
    errno.EDQUOT: "; free some space or write somewhere else",
    errno.EACCES: "; choose a path you may write to, or change its permissions",
    errno.EROFS: "; the file system is read-only: write somewhere else",
    errno.ENOTDIR: "; a part of the path is a file where a folder is needed",
    errno.EISDIR: "; give a file there, not a folder",
}
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # .<name>.<pid or random>.tmp


def user_path(filename: object) -> str:
    """The path to show a user: an internal temporary ``.<name>.<id>.tmp`` becomes ``<name>``."""
    path = Path(os.fsdecode(filename)) if isinstance(filename, str | bytes) else Path(str(filename))
    match = _TEMPORARY.match(path.name)
    return str(path.with_name(match["name"])) if match else str(path)


def _is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit cannot fail again
    except (OSError, ValueError):
        pass
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2 for bad input or usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, already printed)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2

    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (*USER_ERRORS, NonFiniteLossError, OSError, MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not (
            isinstance(err, NonFiniteLossError) or _is_out_of_memory(err)
        ):
            raise  # a bug, not bad input: keep its traceback
        if os.environ.get("MINILLM_DEBUG"):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
