"""The rendered book works offline: formulas typeset by the local MathJax, every image loads.

One lesson with formulas is rendered as a one-page book (the course book's own configuration and
notebook preparation, `scripts/build_book.py`) and opened in headless Chromium. The browser is
Debian's `chromium`; this test installs nothing. When it is missing the test fails and says how
to install it, unless MINILLM_SKIP_BROWSER=1 is set (CI does not set it: `.ci/run` installs it).

Set MINILLM_BOOK_SCREENSHOT=path.png to keep a screenshot of the page, starting at its first
formula (or run `python scripts/build_book.py --page notebooks/NN_x.ipynb --screenshot x.png`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import build_book
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
INLINE_MATH = re.compile(r"\$[^$\n]+\$|\\\(")


def math_count(path: Path) -> int:
    """How many formulas the Markdown cells of a notebook write (inline or display)."""
    nb = nbformat.read(path, as_version=4)
    return sum(len(INLINE_MATH.findall(c.source)) for c in nb.cells if c.cell_type == "markdown")


def lesson_with_most_math() -> Path:
    chosen = os.environ.get("MINILLM_BOOK_LESSON")
    if chosen:
        return ROOT / chosen
    lessons = sorted((ROOT / "notebooks").glob("*.ipynb"))
    return max(lessons, key=math_count)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    lesson = lesson_with_most_math()
    assert math_count(lesson) > 0, f"no lesson writes a formula in LaTeX; {lesson.name} has none"
    return build_book.build_page(lesson, tmp_path_factory.mktemp("book"))


def script_sources(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html)


@pytest.mark.slow
def test_no_script_comes_from_the_network_and_mathjax_is_the_local_copy(page):
    html = page.read_text()
    remote = [src for src in script_sources(html) if re.match(r"(https?:)?//", src)]
    assert not remote, f"the page loads scripts from the network (offline it breaks): {remote}"
    assert "https://cdn" not in html, "the page still references a CDN"
    mathjax = [src for src in script_sources(html) if "mathjax" in src.lower()]
    assert mathjax, "no MathJax script on a page with formulas: is sphinx-mathjax-offline loaded?"
    for src in mathjax:
        local = (page.parent / src.split("?")[0]).resolve()
        assert local.is_file(), f"MathJax script {src} is not in the built site ({local})"


@pytest.mark.slow
def test_nbval_markers_are_hidden(page):
    assert "NBVAL_" not in page.read_text(), "a # NBVAL_* marker shows in the rendered code"


@pytest.fixture(scope="module")
def probe(page) -> dict:
    if build_book.chromium() is None:
        if os.environ.get("MINILLM_SKIP_BROWSER") == "1":
            pytest.skip("MINILLM_SKIP_BROWSER=1: headless Chromium checks skipped on request")
        pytest.fail(
            "headless Chromium is needed to check the rendered book: "
            f"{build_book.BROWSER_HINT} (or set MINILLM_SKIP_BROWSER=1 to skip this check)"
        )
    shot = os.environ.get("MINILLM_BOOK_SCREENSHOT")
    if shot:
        build_book.screenshot(page, Path(shot))
    return build_book.browser_probe(page)


@pytest.mark.slow
def test_formulas_are_typeset(probe, page):
    assert probe["mathjax"], f"MathJax did not start on {page.name}: {probe}"
    assert probe["formulas"] > 0, f"{page.name} has no formula to typeset: {probe}"
    assert probe["typeset"] == probe["formulas"], (
        f"expected all {probe['formulas']} formulas typeset by MathJax, "
        f"got {probe['typeset']}: {probe}"
    )
    assert probe["raw_delimiters"] == 0, (
        f"expected no raw \\( or \\[ left in the text, got {probe['raw_delimiters']}: {probe}"
    )


@pytest.mark.slow
def test_every_image_loads(probe, page):
    assert probe["images"] > 0, f"expected the lesson's figures on {page.name}, got no image"
    assert not probe["broken_images"], (
        f"expected every image to load offline, got broken: {probe['broken_images']}"
    )
