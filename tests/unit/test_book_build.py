"""How scripts/build_book.py prepares the book (fast: nothing is rendered here)."""

from __future__ import annotations

import importlib
from pathlib import Path

import build_book
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]


def test_nbval_markers_are_stripped_from_the_book_copy_only():
    source = "# NBVAL_CHECK_OUTPUT\nprint(1)\n    # NBVAL_IGNORE_OUTPUT\nx = 2"
    nb = new_notebook(cells=[new_code_cell(source)])
    out = build_book.for_the_book(nb)
    assert out.cells[0].source == "print(1)\nx = 2", out.cells[0].source


def test_a_comment_that_only_mentions_nbval_is_kept():
    nb = new_notebook(cells=[new_code_cell("x = 1  # see NBVAL_CHECK_OUTPUT in CONTRIBUTING")])
    assert "NBVAL_CHECK_OUTPUT" in build_book.for_the_book(nb).cells[0].source


def test_the_colab_badge_image_is_served_locally():
    badge = f"[![Open In Colab]({build_book.COLAB_BADGE_URL})](https://colab.example/x.ipynb)"
    nb = build_book.for_the_book(new_notebook(cells=[new_markdown_cell(badge)]), depth=1)
    text = nb.cells[0].source
    assert build_book.COLAB_BADGE_URL not in text, text
    assert "(../_static/colab-badge.svg)" in text, text
    assert (ROOT / "book" / build_book.LOCAL_BADGE).is_file()


def toc_files(lines: list[str]) -> list[str]:
    return [line.split("file:")[1].strip() for line in lines if "file:" in line]


def test_learner_book_leaves_out_the_solutions_and_the_instructor_guide():
    files = toc_files(build_book.toc_lines(["00_a"], ["00_a_solutions"], instructor=False))
    assert "lessons/00_a" in files, files
    assert not [f for f in files if "solution" in f or "instructor" in f], files


def test_instructor_book_adds_the_guide_and_every_solution():
    lines = build_book.toc_lines(["00_a", "01_b"], ["00_a_solutions"], instructor=True)
    files = toc_files(lines)
    for needed in ("instructor_guide", "solutions_index", "solutions/00_a_solutions"):
        assert needed in files, f"expected {needed} in the instructor table of contents: {files}"
    assert yaml.safe_load("\n".join(lines))["root"] == "intro"


def test_learner_estimate_counts_prose_code_and_exercises(tmp_path):
    words = " ".join(["word"] * 1000)  # 10 minutes of prose
    code = "\n".join(["x = 1"] * 150)  # 10 minutes of code
    nb = new_notebook(
        cells=[
            new_markdown_cell(words),
            new_code_cell(code),
            new_markdown_cell("### Exercise 1: a"),
            new_markdown_cell("### Exercise 2: b"),
        ]
    )
    import nbformat

    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    assert build_book.learner_estimate(path) == (20, 2 * build_book.MINUTES_PER_EXERCISE)


def test_the_book_config_uses_the_installed_mathjax_copy():
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    path = config["sphinx"]["config"]["mathjax_path"]
    assert not path.startswith(("http:", "https:", "//")), f"mathjax_path is remote: {path}"
    try:
        extension = importlib.import_module("sphinx-mathjax-offline")
    except ImportError:
        pytest.fail("sphinx-mathjax-offline is not installed: pip install -e '.[course]'")
    shipped = Path(extension.__file__).parent / "static" / path
    assert shipped.is_file(), f"the MathJax package does not ship {path} ({shipped})"


def test_make_has_a_learner_and_an_instructor_book():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nbook:" in makefile and "\nbook-instructor:" in makefile
    assert "--instructor" in makefile
