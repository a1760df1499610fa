"""Run a solutions notebook's exercise checks against a wrong answer (shared test helper).

Minimal implementation of the API agreed for every lesson (HELPER_RULES.md); the lead reconciles
it with the copy written for lessons 00-04.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

_EXERCISE = re.compile(r"^###\s+Exercise\s+(\d+)", re.MULTILINE)


def _sections(path: Path) -> tuple[list[str], dict[int, tuple[list[str], list[str]]]]:
    """Set-up code cells, and per exercise its (solution cells, check cells)."""
    setup: list[str] = []
    exercises: dict[int, tuple[list[str], list[str]]] = {}
    current: int | None = None
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            match = _EXERCISE.search(cell.source)
            if match:
                current = int(match.group(1))
                exercises.setdefault(current, ([], []))
            continue
        if cell.cell_type != "code":
            continue
        if current is None:
            setup.append(cell.source)
        elif "check" in cell.metadata.get("tags", []):
            exercises[current][1].append(cell.source)
        else:
            exercises[current][0].append(cell.source)
    return setup, exercises


def check_fails(solutions_notebook: str | Path, exercise: int, wrong_code: str) -> str:
    """Exec the set-up and earlier exercises, then ``wrong_code`` and exercise ``exercise``'s
    check; assert that the check raises AssertionError and return its message."""
    setup, exercises = _sections(Path(solutions_notebook))
    if exercise not in exercises or not exercises[exercise][1]:
        raise ValueError(f"{solutions_notebook} has no check cell for exercise {exercise}")
    namespace: dict = {"__name__": "__exercise__"}
    for source in setup:
        exec(compile(source, "<setup>", "exec"), namespace)
    for number in sorted(n for n in exercises if n < exercise):
        for source in exercises[number][0] + exercises[number][1]:
            exec(compile(source, f"<exercise {number}>", "exec"), namespace)
    exec(compile(wrong_code, f"<wrong answer to exercise {exercise}>", "exec"), namespace)
    try:
        for source in exercises[exercise][1]:
            exec(compile(source, f"<check {exercise}>", "exec"), namespace)
    except AssertionError as err:
        return str(err)
    raise AssertionError(f"the check of exercise {exercise} accepted a wrong answer")
