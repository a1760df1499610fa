"""scripts/site_check.py takes the site's folder as the README writes it: a relative path."""

from __future__ import annotations

import os

import build_book
import pytest
import site_check


def need_browser() -> None:
    """As in test_book_site.py: Chromium is required unless MINILLM_SKIP_BROWSER=1 says skip."""
    if build_book.chromium() is not None:
        return
    if os.environ.get("MINILLM_SKIP_BROWSER") == "1":
        pytest.skip("MINILLM_SKIP_BROWSER=1: headless Chromium checks skipped on request")
    pytest.fail(f"headless Chromium is needed for the site check: {build_book.BROWSER_HINT}")


def _tiny_site(folder):
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(
        '<html><head><title>t</title></head><body><a href="search.html">search</a></body></html>'
    )
    # No search index: the search check reports "lists no result", a problem, not a crash.
    (folder / "search.html").write_text(
        "<html><head><title>s</title></head><body><p>search</p></body></html>"
    )


def test_a_relative_site_folder_is_checked_not_a_traceback(tmp_path, monkeypatch, capsys):
    need_browser()
    _tiny_site(tmp_path / "book" / "_build" / "html")
    monkeypatch.chdir(tmp_path)
    status = site_check.main(["book/_build/html"])  # was: ValueError from Path.as_uri()
    out = capsys.readouterr().out
    assert "2 pages" in out, out
    assert "search.html: searching for 'attention' lists no result" in out, out
    assert status == 1, "a problem was reported, so the exit status says so"


def test_probe_page_accepts_a_relative_page(tmp_path, monkeypatch):
    need_browser()
    _tiny_site(tmp_path / "site")
    monkeypatch.chdir(tmp_path)
    report = site_check.probe_page(site_check.Path("site/index.html"))
    assert report["problems"] == [], report
