"""Feed a wrong answer to an exercise's check cell and return the check's failure message.

Tests of the form "a wrong but plausible solution fails the check, with a message that says what
was expected and what came" use :func:`check_fails`:

    message = check_fails("solutions/03_attention_solutions.ipynb", 2, WRONG_SOFTMAX)
    assert "expected" in message and "got" in message

The solutions notebook is executed in-process, in one fresh namespace per call: every code cell
before the first ``### Exercise`` heading (the set-up), then the solution and check cells of the
exercises before the one under test, then ``wrong_code`` in place of that exercise's solution
cell(s), then its check cell(s) (tagged ``check``). IPython magics and shell lines (``%...``,
``!...``) are skipped: solutions notebooks should not need them. Figures are drawn on the
non-interactive Agg backend and discarded.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
_EXERCISE_HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\b", re.MULTILINE)


@dataclass
class _Exercise:
    number: int
    solution: list[str] = field(default_factory=list)  # code cells before the first check
    checks: list[str] = field(default_factory=list)  # code cells tagged "check"


def _resolve(path: str | Path) -> Path:
    candidate = Path(path)
    if not candidate.is_absolute() and not candidate.exists():
        candidate = ROOT / candidate
    if not candidate.exists():
        raise ValueError(f"no solutions notebook at {path!s} (looked under {ROOT.name}/ too)")
    return candidate


def _split(nb: nbformat.NotebookNode) -> tuple[list[str], dict[int, _Exercise]]:
    """Split a notebook into its set-up code and its exercises, keyed by exercise number."""
    setup: list[str] = []
    exercises: dict[int, _Exercise] = {}
    current: _Exercise | None = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = _EXERCISE_HEADING.search(cell.source)
            if match:
                current = exercises.setdefault(int(match.group(1)), _Exercise(int(match.group(1))))
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if current is None:
            setup.append(cell.source)
        elif "check" in cell.metadata.get("tags", []):
            current.checks.append(cell.source)
        elif not current.checks:  # code after the check (a demonstration) is not the solution
            current.solution.append(cell.source)
    return setup, exercises


def _python_only(source: str) -> str:
    """Drop IPython magics and shell escapes, which plain ``exec`` cannot run."""
    if source.lstrip().startswith("%%"):
        return ""
    kept = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(kept)


@contextlib.contextmanager
def _notebook_context(folder: Path) -> Iterator[None]:
    """Run as papermill does (cwd = the notebook's folder), drawing nothing on screen."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    before = Path.cwd()
    os.chdir(folder)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-interactive.*")
            yield
    finally:
        os.chdir(before)
        plt.close("all")


def _run(source: str, namespace: dict, where: str) -> None:
    try:
        exec(compile(_python_only(source), where, "exec"), namespace)
    except Exception as err:
        raise RuntimeError(f"{where} raised {type(err).__name__}: {err}") from err


def check_fails(solutions_notebook: str | Path, exercise: int, wrong_code: str) -> str:
    """Run ``wrong_code`` as the solution of ``exercise``; return the check's AssertionError message.

    Args:
        solutions_notebook: path of a ``solutions/NN_*_solutions.ipynb`` (absolute, or relative
            to the current folder or to the repository root).
        exercise: the N of its ``### Exercise N`` heading.
        wrong_code: Python source that replaces the solution cell(s) of that exercise.

    Returns:
        The message of the AssertionError the check cell raised.

    Raises:
        ValueError: no such notebook or exercise, or the exercise has no check cell.
        RuntimeError: the set-up, an earlier exercise or the wrong code itself raised (the test
            is then broken, not the check).
        AssertionError: the check passed on the wrong code, or failed with another exception.
    """
    path = _resolve(solutions_notebook)
    setup, exercises = _split(nbformat.read(path, as_version=4))
    if exercise not in exercises:
        raise ValueError(
            f"{path.name} has no '### Exercise {exercise}'; it has {sorted(exercises)}"
        )
    if not exercises[exercise].checks:
        raise ValueError(f"{path.name} exercise {exercise} has no code cell tagged 'check'")
    namespace: dict = {"__name__": "__main__"}
    with _notebook_context(path.parent):
        for index, source in enumerate(setup):
            _run(source, namespace, f"{path.name} set-up cell {index}")
        for number in sorted(n for n in exercises if n < exercise):
            for index, source in enumerate(exercises[number].solution + exercises[number].checks):
                _run(source, namespace, f"{path.name} exercise {number} cell {index}")
        _run(wrong_code, namespace, f"wrong code for exercise {exercise}")
        for index, source in enumerate(exercises[exercise].checks):
            try:
                exec(compile(_python_only(source), f"check {index}", "exec"), namespace)
            except AssertionError as err:
                return str(err)
            except Exception as err:
                raise AssertionError(
                    f"{path.name} exercise {exercise}: the check raised {type(err).__name__} "
                    f"({err}) on the wrong code, not an AssertionError"
                ) from err
    raise AssertionError(f"{path.name} exercise {exercise}: the check passed on the wrong code")
