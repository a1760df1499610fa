"""Execute notebooks top to bottom, the way the course, the book and the tests do.

Used by ``make notebooks`` (store fresh outputs in place), ``make book`` (executed copies for
the book) and the test suite (alternative parameters). Parameters are injected after the cell
tagged ``parameters`` exactly as papermill does; cells tagged ``raises-exception`` (the exercise
checks before they are solved) may raise. Any other error stops the run with a message that
names the notebook, the cell and the error.

Every run records its provenance in the notebook's metadata (``minillm_provenance``: date,
package version and git commit, CPU model, cores, torch threads, the load average before and
after, the total and each code cell's wall time, the parameters), and a run with the notebook's
own parameters rewrites the title cell's ``**Time.** Machine: ...`` sentence from it, so the time
a lesson states is the time of the outputs stored under it. ``tests/unit/test_provenance.py``
checks stored notebooks with :func:`provenance_problems`.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from minillm.utils import git_commit, load_average, machine_facts

CELL_TIMEOUT_S = 900
KERNEL = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROVENANCE_KEY = "minillm_provenance"
PROVENANCE_FIELDS = (
    "date",
    "minillm",
    "commit",
    "cpu",
    "cores",
    "torch_threads",
    "python",
    "torch",
    "load_average_before",
    "load_average_after",
    "seconds",
    "cell_seconds",
    "parameters",
)
LOAD_PER_TWO_CORES = 1.5  # the busiest a stored run may be: load average 1.5 on 2 cores
# The title cell's machine-time sentence: from "**Time.** Machine:" to "Learner:" or the paragraph's end.
_TIME_SENTENCE = re.compile(r"\*\*Time\.\*\* Machine:.*?(?=Learner:|\n\n|\Z)", re.S)


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


def _cell_seconds(cell: nbformat.NotebookNode) -> float | None:
    """Wall time of one executed cell, from the timestamps nbclient records in its metadata."""
    stamps = cell.get("metadata", {}).get("execution", {})
    start, end = stamps.get("iopub.status.busy"), stamps.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = datetime.fromisoformat
    return round(
        (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds(), 3
    )


def _executed_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indexes of the code cells a kernel runs (nbclient skips cells without code)."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]


def machine_time_sentence(provenance: dict[str, Any]) -> str:
    """The title cell's ``**Time.** Machine: ...`` sentence, generated from a run's provenance."""
    seconds = round(provenance["seconds"])
    minutes = f" ({seconds / 60:.1f} minutes)" if seconds >= 90 else ""
    commit = (provenance["commit"] or "outside git")[:12]
    return (
        f"**Time.** Machine: {seconds} seconds{minutes} on a {provenance['cores']}-core CPU "
        f"({provenance['cpu']}, {provenance['torch_threads']} torch threads, load average "
        f"{provenance['load_average_before']:.2f} before and {provenance['load_average_after']:.2f} "
        f"after), the outputs below executed top to bottom on {provenance['date'][:10]} "
        f"(minillm {provenance['minillm']}, commit {commit}). "
    )


def stamp_title(nb: nbformat.NotebookNode) -> bool:
    """Rewrite the title cell's machine-time sentence from the notebook's provenance.

    Returns whether the title cell has such a sentence (solutions have none).
    """
    title = nb.cells[0]
    if title.cell_type != "markdown" or not _TIME_SENTENCE.search(title.source):
        return False
    sentence = machine_time_sentence(nb.metadata[PROVENANCE_KEY])
    title.source = _TIME_SENTENCE.sub(lambda _: sentence, title.source, count=1).rstrip() + (
        "\n" if title.source.endswith("\n") else ""
    )
    return True


def wait_for_quiet(timeout: float = 120.0, poll: float = 2.0) -> None:
    """Wait until the 1-minute load average is within :func:`load_limit`, at most ``timeout`` s.

    Notebooks run back to back: the one before leaves its own threads in the load average, which
    decays within seconds of its end. A busy machine stays busy; then the run goes ahead and its
    provenance records the load, which the provenance test refuses.
    """
    limit = load_limit(os.cpu_count() or 1)
    deadline = time.monotonic() + timeout
    while (load := load_average()) is not None and load > limit and time.monotonic() < deadline:
        time.sleep(poll)


def load_limit(cores: int) -> float:
    """The highest load average a stored run may have: 1.5 on 2 cores, scaled by the core count."""
    return LOAD_PER_TWO_CORES * cores / 2


def execution_order_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Code cells not executed in one run in order: execution counts other than 1..N."""
    counts = [nb.cells[i].get("execution_count") for i in _executed_cells(nb)]
    expected = list(range(1, len(counts) + 1))
    if counts == expected:
        return []
    return [
        f"execution counts are {counts}, not 1..{len(counts)} (cells run out of order, or not all)"
    ]


def provenance_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with a stored notebook's claim to come from one quiet run (empty: nothing)."""
    problems = execution_order_problems(nb)
    provenance = nb.metadata.get(PROVENANCE_KEY)
    if provenance is None:
        return [
            *problems,
            f"no {PROVENANCE_KEY} metadata: store it with scripts/nbexec.py --inplace",
        ]
    missing = [name for name in PROVENANCE_FIELDS if name not in provenance]
    if missing:
        return [*problems, f"provenance lacks {missing}"]
    if provenance["parameters"]:
        problems.append(f"stored from a run with parameters {provenance['parameters']}")
    limit = load_limit(provenance["cores"])
    loads = [provenance["load_average_before"], provenance["load_average_after"]]
    # Measured as the run ends, the load average counts the run's own threads too (a lesson that
    # keeps 2 torch threads busy reads about 2 on a quiet 2-core machine): those are taken off the
    # reading after the run, so what is compared with the limit is the load of everything else.
    own = min(provenance.get("torch_threads") or 1, provenance["cores"])
    others = [loads[0], None if loads[1] is None else round(loads[1] - own, 2)]
    if any(load is None or load > limit for load in others):
        problems.append(
            f"stored from a run at load average {loads} on {provenance['cores']} cores "
            f"({others} without the run's own {own} threads; at most {limit:.2f}): re-execute "
            "on a quiet machine"
        )
    recorded = [index for index, _ in provenance["cell_seconds"]]
    if recorded != _executed_cells(nb):
        problems.append("the cells timed in the provenance are not the notebook's code cells")
    title = nb.cells[0].source if nb.cells else ""
    if "**Time.** Machine:" in title and machine_time_sentence(provenance).strip() not in title:
        problems.append(
            "the title's machine time disagrees with the provenance; expected "
            f"{machine_time_sentence(provenance).strip()!r}"
        )
    return problems


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
    wait_for_quiet()  # the previous notebook's own load fades in seconds; another job's does not
    facts = machine_facts()
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.perf_counter()
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
    nb.metadata[PROVENANCE_KEY] = {
        "date": date,
        "minillm": facts["minillm"],
        "commit": git_commit(path.parent),
        "cpu": facts["cpu"],
        "cores": facts["cores"],
        "torch_threads": facts["torch_threads"],
        "python": facts["python"],
        "torch": facts["torch"],
        "load_average_before": facts["load_average"],
        "load_average_after": load_average(),
        "seconds": round(time.perf_counter() - started, 1),
        "cell_seconds": [[i, _cell_seconds(nb.cells[i])] for i in _executed_cells(nb)],
        "parameters": parameters or {},
    }
    if not parameters:  # the title states the time of a run with the lesson's own parameters
        stamp_title(nb)
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
