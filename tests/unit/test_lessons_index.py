"""minillm.utils.lessons() agrees with notebooks/, and the lesson diagrams draw."""

from __future__ import annotations

import importlib

import nbformat
import pytest
from conftest import ROOT

from minillm.utils import lessons


def _title(path):
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    return first.removeprefix("# Lesson ").split(" — ", 1)


def test_written_lessons_are_the_notebooks_with_their_titles():
    on_disk = {
        number: title for number, title in map(_title, sorted(ROOT.glob("notebooks/*.ipynb")))
    }
    listed = {lesson.number: lesson.title for lesson in lessons("written")}
    assert listed == on_disk


def test_every_lesson_00_to_14_is_written():
    assert [lesson.number for lesson in lessons("written")] == [f"{n:02d}" for n in range(15)]
    assert lessons("planned") == []
    assert [lesson.number for lesson in lessons()] == [f"{n:02d}" for n in range(15)]


def test_written_lessons_name_a_stage_package_that_imports():
    for lesson in lessons("written"):
        assert lesson.package is not None, lesson
        assert importlib.import_module(lesson.package).__doc__, lesson


def test_lessons_rejects_an_unknown_status():
    with pytest.raises(ValueError, match="status must be None, 'written' or 'planned'"):
        lessons("draft")


def test_lesson_diagrams_draw_at_book_width():
    import matplotlib

    matplotlib.use("Agg")
    from minillm.model import attention_diagram, block_diagram, multihead_reshape_diagram

    for figure in (attention_diagram(), multihead_reshape_diagram(n_head=2), block_diagram()):
        width, _ = figure.get_size_inches()
        assert 7 <= width <= 7.5
        assert figure.axes[0].patches, "a diagram without boxes"
