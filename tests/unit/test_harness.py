"""The notebook executor behind `make notebooks`, `make book` and the parameter runs."""

from __future__ import annotations

import nbformat
import pytest
from nbexec import NotebookError, execute_notebook
from nbformat.v4 import new_code_cell, new_notebook


def write(path, *cells):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def tagged(source, *tags):
    cell = new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    return cell


@pytest.mark.slow
def test_failure_names_the_notebook_the_cell_and_the_error(tmp_path):
    path = write(tmp_path / "99_broken.ipynb", new_code_cell("x = 1"), new_code_cell("1 / 0"))
    with pytest.raises(NotebookError) as excinfo:
        execute_notebook(path)
    message = str(excinfo.value)
    assert "99_broken.ipynb" in message
    assert "cell 1" in message
    assert "ZeroDivisionError" in message


@pytest.mark.slow
def test_tagged_exercise_checks_may_raise_and_parameters_are_injected(tmp_path):
    path = write(
        tmp_path / "98_ok.ipynb",
        tagged("size = 1", "parameters"),
        tagged("raise NotImplementedError('exercise')", "raises-exception"),
        new_code_cell("assert size == 5, size"),
    )
    out = tmp_path / "out" / "98_ok.ipynb"
    nb = execute_notebook(path, parameters={"size": 5}, output_path=out)
    assert out.exists()
    assert nb.cells[2].outputs[0]["ename"] == "NotImplementedError"


def test_tidy_streams_merges_progress_bar_redraws():
    from nbexec import tidy_streams
    from nbformat.v4 import new_output

    cell = new_code_cell("train()")
    cell.outputs = [
        new_output("stream", name="stdout", text="start\n"),
        new_output("stream", name="stderr", text="\rtrain:   0%"),
        new_output("stream", name="stderr", text="\rtrain:  50%"),
        new_output("stream", name="stderr", text="\rtrain: 100%\n"),
        new_output("stream", name="stdout", text="done\n"),
    ]
    nb = new_notebook(cells=[cell])
    tidy_streams(nb)
    assert [(o["name"], o["text"]) for o in nb.cells[0].outputs] == [
        ("stdout", "start\n"),
        ("stderr", "train: 100%\n"),
        ("stdout", "done\n"),
    ]
