"""scripts/lesson_lint.py: each rule catches what it claims, and the lessons pass it.

The lessons are held to the rules with a short, explicit list of the findings that are still open
(``OPEN``): a new finding fails, and so does an open one that has been fixed (take it off the list).
The list empties as the lessons are re-executed with readable figures (issue 29).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import lesson_lint as L  # noqa: E402

OPEN = {
    "notebooks/01_data.ipynb: figure: figsize=(4.6, 4.2) is below (6.0, 3.0)",
    "notebooks/05_pretraining.ipynb: figure: figsize=(7, 2.2) is below (6.0, 3.0)",
    "notebooks/05_pretraining.ipynb: number: 2,048 is printed by no cell and no results file",
    "notebooks/05_pretraining.ipynb: check-holds-solution: the check cell repeats the "
    "solution of lr_range_test: 'optimizer = torch.optim.AdamW(model.parameters(), lr=lr)'",
    "notebooks/08_fine_tuning.ipynb: figure: figsize=(11, 1.8) is below (6.0, 3.0)",
    "notebooks/09_evaluation.ipynb: figure: figsize=(7, 2.6) is below (6.0, 3.0)",
    "notebooks/11_serving.ipynb: figure: figsize=(15, 2.8) is below (6.0, 3.0)",
    "notebooks/11_serving.ipynb: figure: figsize=(5, 3) is below (6.0, 3.0)",
    "notebooks/12_release.ipynb: figure: figsize=(7, 1.8) is below (6.0, 3.0)",
    "notebooks/13_interpretability.ipynb: figure: figsize=(7, 2.9) is below (6.0, 3.0)",
}


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def code(source, text=""):
    cell = nbformat.v4.new_code_cell(source)
    if text:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    return cell


md = nbformat.v4.new_markdown_cell


def test_a_number_no_cell_printed_is_found_and_a_printed_one_is_not(tmp_path):
    nb = notebook(
        md("# Title"),
        code("print(loss)", "validation loss 2.2791 bits per byte\n"),
        md("The run reached 2.279 bits per byte; the old model reached 2.152."),
    )
    found = [f.detail for f in L.lint_numbers(nb, "x.ipynb", tmp_path)]
    assert found == ["2.152 is printed by no cell and no results file"], found


def test_a_number_from_a_named_results_file_is_backed(tmp_path):
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "demo.json").write_text('{"bpb": 2.0928}')
    nb = notebook(md("# T"), md("The shipped model: 2.09 (`bench/results/demo.json`)."))
    assert not list(L.lint_numbers(nb, "x.ipynb", tmp_path))
    nb = notebook(md("# T"), md("The shipped model: 2.09."))
    assert len(list(L.lint_numbers(nb, "x.ipynb", tmp_path))) == 1


def test_percentages_maths_code_sections_and_versions_are_handled(tmp_path):
    nb = notebook(
        md("# T"),
        code("acc = 0.6389", "0.6389\n"),
        md(
            "### 6.2 Shingles\n\nAccuracy 63.9% (section 6.4). $x = 3.14159$, `lr=0.0123`, "
            "torch 2.13, in 2026."
        ),
    )
    assert not list(L.lint_numbers(nb, "x.ipynb", tmp_path))


def test_team_wording_is_found():
    nb = notebook(md("The lead's model may be retrained; see issue 24."), md("the leading space"))
    details = [f.detail for f in L.lint_wording(nb, "x.ipynb")]
    assert details == ["'The lead' is written for the team", "'issue 24' is written for the team"]


def test_small_figures_are_found():
    nb = notebook(
        code("fig, ax = plt.subplots(figsize=(7, 2))"), code("plt.figure(figsize=(8, 4))")
    )
    assert [f.cell for f in L.lint_figures(nb, "x.ipynb")] == [0]


def test_a_check_cell_that_holds_the_solution_is_found():
    stub = code("def f(x):\n    raise NotImplementedError('Exercise 1')\n")
    leaky = code("# Check for exercise 1\ny = x * 2\nz = y + 1\nw = z ** 2\nassert f(1) == w\n")
    fair = code("# Check for exercise 1\nassert f(1) == 16, f(1)\n")
    solved = notebook(
        code("def f(x):\n    y = x * 2\n    z = y + 1\n    w = z ** 2\n    return w\n")
    )
    assert [f.rule for f in L.lint_check_cells(notebook(stub, leaky), "x", solved)] == [
        "check-holds-solution"
    ]
    assert not list(L.lint_check_cells(notebook(stub, fair), "x", solved))


LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def findings():
    # keyed without the cell number, so inserting a cell above a finding does not move it
    return {f"{f.path}: {f.rule}: {f.detail}" for path in LESSONS for f in L.lint(path)}


def test_the_lessons_have_no_new_findings(findings):
    new = sorted(findings - OPEN)
    assert not new, "lesson_lint found (fix them, or explain why not):\n" + "\n".join(new)


def test_the_open_list_holds_only_open_findings(findings):
    fixed = sorted(OPEN - findings)
    assert not fixed, "fixed: take these off OPEN in this file:\n" + "\n".join(fixed)
