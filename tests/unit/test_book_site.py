"""The published book, checked as a reader's browser sees it, offline (scripts/site_check.py).

The whole learner book is rendered from the stored outputs (the same sources, configuration and
notebook preparation as `make book`, without executing a lesson) and every page is opened in
headless Chromium with every host name unresolvable. The checker itself is first shown to catch
what it should on small hand-made pages. Chromium is Debian's `chromium` (`.ci/run` installs it);
without it the browser tests fail and say how to get it, unless MINILLM_SKIP_BROWSER=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import build_book
import pytest
import site_check

ROOT = Path(__file__).resolve().parents[2]


def need_browser() -> None:
    if build_book.chromium() is not None:
        return
    if os.environ.get("MINILLM_SKIP_BROWSER") == "1":
        pytest.skip("MINILLM_SKIP_BROWSER=1: headless Chromium checks skipped on request")
    pytest.fail(f"headless Chromium is needed for the site check: {build_book.BROWSER_HINT}")


def write_site(folder: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><head><title>t</title></head><body>{body}</body></html>")
    return folder


def test_the_link_checker_finds_missing_pages_anchors_and_remote_scripts(tmp_path):
    site = write_site(
        tmp_path,
        {
            "index.html": '<a href="a.html#here">ok</a> <a href="a.html#gone">bad anchor</a>'
            '<a href="missing.html">missing</a> <a href="https://example.org/">outbound</a>'
            '<script src="https://cdn.example.org/x.js"></script>',
            "a.html": '<h1 id="here">A</h1><img src="img/none.png">',
        },
    )
    problems = "\n".join(site_check.link_problems(site))
    assert "#gone" in problems, f"expected the missing anchor reported, got:\n{problems}"
    assert "missing.html" in problems, f"expected the missing page reported, got:\n{problems}"
    assert "cdn.example.org" in problems, f"expected the remote script reported, got:\n{problems}"
    assert "img/none.png" in problems, f"expected the missing image reported, got:\n{problems}"
    assert "example.org/\n" not in problems + "\n", "an outbound link is not a fetch"
    assert "#here" not in problems, f"a good anchor was reported:\n{problems}"


@pytest.mark.slow
def test_the_browser_probe_sees_errors_and_requests_that_try_to_leave(tmp_path):
    need_browser()
    page = (
        write_site(
            tmp_path,
            {
                "p.html": '<img src="https://example.org/pixel.png">'
                "<script>console.error('boom'); undefined_function();</script>"
            },
        )
        / "p.html"
    )
    report = site_check.probe_page(page)
    problems = "\n".join(report["problems"])
    assert "console.error: boom" in problems, f"expected the console error, got {report}"
    assert "uncaught" in problems, f"expected the uncaught ReferenceError, got {report}"
    assert any("example.org" in url for url in report["network"]), (
        f"expected the request to example.org in Chromium's network log, got {report}"
    )
    assert any("example.org" in url for url in report["remote"]), (
        f"expected the request to example.org in the page's resource list, got {report}"
    )
    assert not [url for url in report["network"] if "example.org" not in url], (
        f"expected only the page's own request, not Chromium's services, got {report['network']}"
    )
    assert report["broken_images"], f"expected the remote image broken offline, got {report}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return build_book.build_site(tmp_path_factory.mktemp("site"))


@pytest.mark.slow
def test_every_lesson_is_a_page_of_the_book(site):
    lessons = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
    pages = sorted(path.stem for path in (site / "lessons").glob("*.html"))
    assert pages == lessons, f"expected a page per lesson {lessons}, got {pages}"
    api = (site / "api.html").read_text()
    for module in sorted((ROOT / "minillm").glob("[a-z]*.py")):
        assert f"minillm.{module.stem}" in api, f"expected minillm.{module.stem} in the API page"


@pytest.mark.slow
def test_the_whole_site_works_offline(site):
    need_browser()
    report = site_check.check_site(site)
    problems = "\n".join(report["problems"])
    assert not report["problems"], f"expected no problem on the built site, got:\n{problems}"
    assert report["search_hits"] > 0, f"expected search results for 'attention', got {report}"
    assert report["typeset"] == report["formulas"] > 0, f"expected typeset formulas, got {report}"
    assert report["images"] > 0, f"expected the lessons' figures, got {report}"
