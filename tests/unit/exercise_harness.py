"""Feed a wrong answer to an exercise's check cell and return the check's failure message.

Minimal implementation of the shared API (the lessons helper's version may replace it):

    check_fails(solutions_notebook, exercise, wrong_code) -> str

Runs, in one fresh namespace, every code cell of the solutions notebook before the first
``### Exercise`` heading, then the solution and check cells of the earlier exercises, then
``wrong_code`` in place of exercise ``exercise``'s solution cell(s), then its check cell(s)
(tagged ``check``); asserts that the check raises AssertionError and returns its message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import nbformat

ROOT = Path(__file__).resolve().parents[2]
_HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\b", re.MULTILINE)


def _split(nb) -> tuple[list[str], dict[int, tuple[list[str], list[str]]]]:
    setup: list[str] = []
    exercises: dict[int, tuple[list[str], list[str]]] = {}
    current: int | None = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = _HEADING.search(cell.source)
            if match:
                current = int(match.group(1))
                exercises.setdefault(current, ([], []))
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if current is None:
            setup.append(cell.source)
        elif "check" in cell.metadata.get("tags", []):
            exercises[current][1].append(cell.source)
        elif not exercises[current][1]:
            exercises[current][0].append(cell.source)
    return setup, exercises


def check_fails(solutions_notebook: str | Path, exercise: int, wrong_code: str) -> str:
    """Run exercise ``exercise``'s check on ``wrong_code``; return the AssertionError message."""
    path = Path(solutions_notebook)
    path = path if path.is_absolute() else ROOT / path
    setup, exercises = _split(nbformat.read(path, as_version=4))
    if exercise not in exercises or not exercises[exercise][1]:
        raise ValueError(f"{path.name} has no check cell for exercise {exercise}")
    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for source in setup:
            exec(compile(source, f"{path.name}:setup", "exec"), namespace)
        for number in sorted(n for n in exercises if n < exercise):
            for source in exercises[number][0] + exercises[number][1]:
                exec(compile(source, f"{path.name}:exercise {number}", "exec"), namespace)
        exec(compile(wrong_code, "wrong answer", "exec"), namespace)
        try:
            for source in exercises[exercise][1]:
                exec(compile(source, f"{path.name}:check {exercise}", "exec"), namespace)
        except AssertionError as err:
            return str(err)
    finally:
        os.chdir(cwd)
    raise AssertionError(f"the check of exercise {exercise} accepted the wrong answer")
