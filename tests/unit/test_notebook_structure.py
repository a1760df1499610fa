"""Every lesson and solution follows the course conventions (COURSE_DESIGN.md §5).

These checks read the notebooks without executing them, so a new lesson is held to the same
rules as soon as it is added, with no change to the harness.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LESSON_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def solution_path(lesson: Path) -> Path:
    return ROOT / "solutions" / f"{lesson.stem}_solutions.ipynb"


def test_there_are_lessons():
    assert LESSONS, "notebooks/ holds no lessons"


def test_lesson_numbers_are_unique():
    numbers = [LESSON_NAME.match(p.name).group(1) for p in LESSONS if LESSON_NAME.match(p.name)]
    assert len(numbers) == len(set(numbers)), f"two lessons share a number: {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
class TestLesson:
    def test_name(self, path):
        assert LESSON_NAME.match(path.name), f"{path.name}: lessons are named NN_<stage>.ipynb"

    def test_title_cell(self, path):
        first = nbformat.read(path, as_version=4).cells[0]
        number = path.name[:2]
        assert first.cell_type == "markdown", f"{path.name}: the first cell must be the title"
        assert first.source.startswith(f"# Lesson {number}"), (
            f"{path.name}: the title must start with '# Lesson {number}'"
        )
        for needed in ("What you will build", "Prerequisites", "Time"):
            assert needed in first.source, f"{path.name}: the title cell must state {needed!r}"

    def test_one_parameters_cell(self, path):
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in code_cells(nb) if "parameters" in tags(c)]
        assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"

    def test_outputs_stored_from_one_run_in_order(self, path):
        nb = nbformat.read(path, as_version=4)
        counts = [c.execution_count for c in code_cells(nb) if c.source.strip()]
        assert None not in counts, f"{path.name}: outputs not stored; run `make notebooks`"
        assert counts == sorted(counts), f"{path.name}: cells were run out of order: {counts}"

    def test_figures_are_stored(self, path):
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(code_cells(nb)):
            if "plt.show()" in cell.source:
                kinds = {key for out in cell.get("outputs", []) for key in out.get("data", {})}
                assert "image/png" in kinds, (
                    f"{path.name} code cell {index} shows a figure but stores none; re-execute "
                    "it without MPLBACKEND=Agg (scripts/nbexec.py does this)"
                )

    def test_exercise_stubs_raise_and_checks_are_tagged(self, path):
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(code_cells(nb)):
            if "raise NotImplementedError" in cell.source:
                assert "exercise" in tags(cell), f"{path.name} code cell {index}: tag it 'exercise'"
            if "check" in tags(cell):
                assert "raises-exception" in tags(cell), (
                    f"{path.name} code cell {index}: an exercise check in a lesson must be tagged "
                    "'raises-exception' (it raises until the exercise is solved)"
                )
            elif "raises-exception" in tags(cell):
                pytest.fail(f"{path.name} code cell {index}: only check cells may raise")

    def test_solutions_run_the_same_checks(self, path):
        nb = nbformat.read(path, as_version=4)
        checks = [c.source for c in code_cells(nb) if "check" in tags(c)]
        if not checks:
            return
        solved = solution_path(path)
        assert solved.exists(), f"{path.name} has exercises but no {solved.relative_to(ROOT)}"
        solved_checks = [
            c.source for c in code_cells(nbformat.read(solved, as_version=4)) if "check" in tags(c)
        ]
        missing = [src.splitlines()[0] for src in checks if src not in solved_checks]
        assert not missing, f"{solved.name} lacks these check cells of {path.name}: {missing}"


HEADING = re.compile(r"^(#{1,6}) ", re.MULTILINE)


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=[p.name for p in LESSONS + SOLUTIONS])
def test_headings_never_skip_a_level(path):
    """The book treats a jump such as H1 -> H3 as a Sphinx warning, hence an error."""
    level = 0
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        for match in HEADING.finditer(cell.source):
            new_level = len(match.group(1))
            assert new_level <= level + 1, (
                f"{path.name}: heading {match.group(0)!r} jumps from level {level} to {new_level}"
            )
            level = new_level


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_solution_belongs_to_a_lesson_and_never_expects_errors(path):
    lesson = ROOT / "notebooks" / path.name.replace("_solutions.ipynb", ".ipynb")
    assert lesson.exists(), f"{path.name}: no lesson {lesson.name} in notebooks/"
    for index, cell in enumerate(code_cells(nbformat.read(path, as_version=4))):
        assert "raises-exception" not in tags(cell), f"{path.name} code cell {index} may raise"
        assert "raise NotImplementedError" not in cell.source, (
            f"{path.name} code cell {index} is still a stub"
        )
