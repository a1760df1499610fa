"""Execute notebooks top to bottom, the way the course, the book and the tests do.

Used by ``make notebooks`` (store fresh outputs in place), ``make book`` (executed copies for
the book) and the test suite (alternative parameters). Parameters are injected after the cell
tagged ``parameters`` exactly as papermill does; cells tagged ``raises-exception`` (the exercise
checks before they are solved) may raise. Any other error stops the run with a message that
names the notebook, the cell and the error.

    python scripts/nbexec.py --inplace notebooks/*.ipynb
    python scripts/nbexec.py --output-dir book/lessons notebooks/00_welcome_and_setup.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

CELL_TIMEOUT_S = 900
KERNEL = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookError(RuntimeError):
    """A notebook failed: the message names the notebook, the cell and the error."""


def _describe_failure(path: Path, nb: nbformat.NotebookNode) -> str:
    """Find the first cell with an unexpected error and say where and what it was."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and "raises-exception" not in tags:
                first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
                return (
                    f"{path}: cell {index} (execution count {cell.get('execution_count')}, "
                    f"starting {first_line[:60]!r}) raised {output['ename']}: "
                    f"{_ANSI.sub('', output['evalue'])}"
                )
    return f"{path}: execution failed"


def _collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: on each line, the text after its last carriage return."""
    lines = []
    for line in text.split("\n"):
        segments = [segment for segment in line.split("\r") if segment]
        lines.append(segments[-1] if segments else "")
    return "\n".join(lines)


def tidy_streams(nb: nbformat.NotebookNode) -> None:
    """Merge consecutive outputs of one stream and resolve progress-bar redraws (``\\r``).

    A tqdm bar writes one stream output per redraw; stored as is, a training cell holds
    dozens of them, and the book shows each on its own line. Jupyter displays the last state.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged: list = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (
                output.get("output_type") == "stream"
                and previous is not None
                and previous.get("output_type") == "stream"
                and previous.get("name") == output.get("name")
            ):
                previous["text"] += output["text"]
            else:
                merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream":
                output["text"] = _collapse_carriage_returns(output["text"])
        cell.outputs = merged


def execute_notebook(
    path: str | Path,
    parameters: dict[str, Any] | None = None,
    output_path: str | Path | None = None,
    timeout: int = CELL_TIMEOUT_S,
) -> nbformat.NotebookNode:
    """Execute ``path`` in its own folder and return the executed notebook.

    Raises:
        NotebookError: a cell without the ``raises-exception`` tag raised, or timed out.
    """
    path = Path(path)
    if parameters:
        # papermill's loader adds the metadata its parameter injection expects
        nb = parameterize_notebook(load_notebook_node(str(path)), parameters)
    else:
        nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    # A non-interactive MPLBACKEND (set by tests, say) would stop the kernel from storing figures.
    saved_backend = os.environ.pop("MPLBACKEND", None)
    try:
        client.execute()
    except CellTimeoutError as err:
        raise NotebookError(f"{path}: a cell ran longer than {timeout} s: {err}") from None
    except CellExecutionError:
        raise NotebookError(_describe_failure(path, nb)) from None
    finally:
        if saved_backend is not None:
            os.environ["MPLBACKEND"] = saved_backend
    tidy_streams(nb)
    if output_path is not None:
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = output_path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(output_path)  # atomic: a failed run never leaves half a notebook
    return nb


def record_timings(path: Path, timings: dict[str, float]) -> None:
    """Merge measured seconds per notebook into the JSON file at ``path``."""
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.update(timings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(recorded.items())), indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--inplace", action="store_true", help="store outputs in the notebooks")
    where.add_argument("--output-dir", type=Path, help="write executed copies here")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON_VALUE"),
        help="override a parameter",
    )
    parser.add_argument("--timings", type=Path, help="write measured seconds per notebook (JSON)")
    args = parser.parse_args(argv)

    parameters = {name: json.loads(value) for name, value in args.parameter}
    timings: dict[str, float] = {}
    for path in args.notebooks:
        target = path if args.inplace else args.output_dir / path.name
        start = time.perf_counter()
        print(f"executing {path} ...", flush=True)
        try:
            execute_notebook(path, parameters, target)
        except NotebookError as err:
            print(f"FAILED {err}", file=sys.stderr)
            return 1
        timings[path.as_posix()] = round(time.perf_counter() - start, 1)
        print(f"  done in {timings[path.as_posix()]:.1f} s -> {target}", flush=True)
    if args.timings:
        record_timings(args.timings, timings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
