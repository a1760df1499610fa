"""Check a built book site the way a reader's browser sees it, offline.

Four checks over the HTML folder that ``jupyter-book build`` wrote:

1. links: every internal ``href``/``src`` resolves to a file of the site, and every ``#anchor``
   to an element id on the target page; no script, stylesheet or image is fetched from the network;
2. pages: each page is opened in headless Chromium (Debian's ``chromium``) with every host
   name unresolvable, so nothing can leave the machine; a probe injected at the top of a copy of
   the page records console errors, uncaught exceptions and failed loads, then reports images
   loaded, formulas typeset and every resource the page asked for (and Chromium's own network log
   is read for any request to a host);
3. search: ``search.html?q=attention`` lists at least one result;
4. the report names each problem with its page, so a failure says what to fix.

    python scripts/site_check.py book/_build/html        # after make book
    python scripts/site_check.py --build                   # render the stored outputs, then check

``tests/unit/test_book_site.py`` runs it on the whole learner book in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_book  # noqa: E402

# Attributes that make the browser fetch something (a broken one is a broken page) and those
# that only link somewhere (a broken one is a dead link).
FETCHED = {("img", "src"), ("script", "src"), ("link", "href"), ("source", "src")}
REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)
SKIPPED_SCHEMES = ("mailto:", "javascript:", "data:", "tel:")


class _PageParser(HTMLParser):
    """Collects the element ids of a page and the URLs it links to or fetches."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.urls.append((tag, name, value))


def _parse(page: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(page.read_text(errors="replace"))
    return parser


# Not pages of the book: the theme's Jinja templates copied into _static, and the highlighted
# source listings of sphinx.ext.viewcode (whose "[docs]" back-links name objects the way autodoc
# first met them, which for a name re-exported by another module is not the API page's anchor).
NOT_PAGES = ("_static", "_sources", "_modules")


def book_pages(site: Path) -> list[Path]:
    """The HTML pages a reader opens: everything but the folders in :data:`NOT_PAGES`."""
    return sorted(
        path for path in site.rglob("*.html") if path.relative_to(site).parts[0] not in NOT_PAGES
    )


def link_problems(site: Path) -> list[str]:
    """Broken internal links and anchors, and resources fetched from the network."""
    pages = {path.resolve(): _parse(path) for path in book_pages(site)}
    problems = []
    for page, parsed in pages.items():
        name = page.relative_to(site.resolve())
        for tag, attribute, url in parsed.urls:
            if url.startswith(SKIPPED_SCHEMES) or url in ("", "#"):
                continue
            if REMOTE.match(url):
                if (tag, attribute) in FETCHED and not _is_plain_link(tag, url, parsed):
                    problems.append(f"{name}: <{tag} {attribute}> fetched from the network: {url}")
                continue
            parts = urlsplit(url)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if not target.exists():
                problems.append(f"{name}: <{tag} {attribute}={url!r}> points at a missing file")
                continue
            if parts.fragment and target.suffix == ".html":
                anchors = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in anchors:
                    problems.append(f"{name}: link {url!r}: no #{parts.fragment} on that page")
    return problems


def _is_plain_link(tag: str, url: str, parsed: _PageParser) -> bool:
    """``<link rel=canonical>``-style tags carry URLs that nothing fetches; stylesheets do."""
    return tag == "link" and not url.endswith((".css", ".js", ".woff", ".woff2"))


REDIRECT = re.compile(r'<meta http-equiv="refresh"', re.IGNORECASE)

# Runs before any script of the page: records what went wrong, then reports at load.
PROBE = """<script>
(function () {
  var problems = [];
  var original = console.error;
  console.error = function () {
    problems.push("console.error: " + Array.from(arguments).join(" "));
    return original.apply(console, arguments);
  };
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    if (target !== window && (target.src || target.href)) {
      problems.push("failed to load: " + (target.src || target.href));
    } else {
      problems.push("uncaught: " + event.message);
    }
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    problems.push("unhandled rejection: " + event.reason);
  });
  function report() {
    var resources = performance.getEntriesByType("resource").map(function (r) { return r.name; });
    var images = Array.from(document.images);
    var out = document.createElement("pre");
    out.id = "minillm-site-probe";
    out.textContent = JSON.stringify({
      problems: problems,
      remote: resources.filter(function (url) { return /^https?:/.test(url); }),
      images: images.length,
      broken_images: images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
        .map(function (img) { return img.getAttribute("src"); }),
      formulas: document.querySelectorAll(".math").length,
      typeset: document.querySelectorAll(".math mjx-container").length,
      search_results: document.querySelectorAll("#search-results li").length
    });
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    var ready = window.MathJax && MathJax.startup && MathJax.startup.promise;
    (ready ? MathJax.startup.promise : Promise.resolve()).then(report, report);
  });
})();
</script>"""

# Chromium with every host unresolvable and its own background traffic off: a page that asks
# for anything on the network gets an error, which the probe and the network log both see.
OFFLINE_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def page_requests(netlog: str) -> list[str]:
    """The network URLs that a page asked for, from Chromium's ``--log-net-log`` JSON.

    Chromium's own services (update checks, the clock, account look-ups) also appear in the log;
    their requests carry the initiator ``"not an origin"``, while a page's carry the page's
    origin (``"null"`` for a file), so only the latter count.
    """
    try:
        events = json.loads(netlog).get("events", [])
    except json.JSONDecodeError:  # a log cut short: read the request parameters one by one
        events = [
            {"params": {"initiator": initiator, "url": url}}
            for initiator, url in re.findall(
                r'"initiator":"([^"]*)"[^{}]*?"url":"(https?://[^"]+)"', netlog
            )
        ]
    urls = set()
    for event in events:
        params = event.get("params") or {}
        url, initiator = params.get("url", ""), params.get("initiator")
        if url.startswith(("http:", "https:")) and initiator not in (None, "not an origin"):
            urls.add(url)
    return sorted(urls)


def probe_page(page: Path, query: str = "") -> dict:
    """Open ``page`` (a copy with the probe injected) offline; what the browser saw, as a dict."""
    page = Path(page).resolve()  # a file:// URI needs an absolute path (a relative one would raise)
    copy = page.with_name(f"{page.stem}.site-probe.html")
    copy.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    with tempfile.TemporaryDirectory(prefix="minillm-netlog-") as folder:
        netlog = Path(folder) / "net.json"
        try:
            dom = build_book._run_chromium(
                copy.as_uri() + query, "--dump-dom", f"--log-net-log={netlog}", *OFFLINE_FLAGS
            )
        finally:
            copy.unlink()
        hosts = page_requests(netlog.read_text(errors="replace"))
    match = re.search(r'<pre id="minillm-site-probe"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    if match is None:
        return {"problems": ["the page did not finish loading (no probe report)"], "network": hosts}
    report = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    report["problems"] = [p.replace("&lt;", "<").replace("&gt;", ">") for p in report["problems"]]
    report["network"] = sorted(set(hosts))
    return report


def page_problems(site: Path) -> tuple[list[str], dict]:
    """Open every page; returns the problems found and totals (pages, images, formulas)."""
    problems: list[str] = []
    totals = {"pages": 0, "images": 0, "formulas": 0, "typeset": 0}
    for page in book_pages(site):
        name = page.relative_to(site)
        if REDIRECT.search(page.read_text(errors="replace")[:500]):
            continue  # a redirect (index.html -> intro.html): its target is checked itself
        report = probe_page(page)
        totals["pages"] += 1
        for key in ("images", "formulas", "typeset"):
            totals[key] += report.get(key, 0)
        problems += [f"{name}: {problem}" for problem in report["problems"]]
        problems += [f"{name}: a request left the machine: {url}" for url in report["network"]]
        problems += [
            f"{name}: resource from the network: {url}" for url in report.get("remote", [])
        ]
        problems += [
            f"{name}: image did not load: {src}" for src in report.get("broken_images", [])
        ]
        if report.get("typeset", 0) != report.get("formulas", 0):
            problems.append(
                f"{name}: {report['formulas']} formulas, only {report['typeset']} typeset by MathJax"
            )
    return problems, totals


def search_hits(site: Path, word: str) -> int:
    """How many results the site's own search page lists for ``word``."""
    report = probe_page(site / "search.html", query=f"?q={word}")
    return int(report.get("search_results", 0))


def check_site(site: Path, search_word: str = "attention") -> dict:
    """Every check above; returns ``{"problems": [...], "pages": ..., "search_hits": ...}``."""
    site = Path(site).resolve()  # the browser opens file:// URIs, which must be absolute
    problems = link_problems(site)
    browser_problems, totals = page_problems(site)
    hits = search_hits(site, search_word)
    if hits == 0:
        problems.append(f"search.html: searching for {search_word!r} lists no result")
    return {"problems": problems + browser_problems, "search_hits": hits, **totals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", type=Path, help="the built HTML folder")
    parser.add_argument(
        "--build", action="store_true", help="render the stored outputs into a temporary folder"
    )
    args = parser.parse_args(argv)
    if args.build:
        site = build_book.build_site(Path(tempfile.mkdtemp(prefix="minillm-site-")))
    elif args.site is not None and (args.site / "index.html").is_file():
        site = args.site.resolve()
    else:
        parser.error("give the built site's folder (with index.html) or --build")
    report = check_site(site)
    for problem in report["problems"]:
        print("PROBLEM", problem)
    print(
        f"{report['pages']} pages, {report['images']} images, {report['typeset']}/"
        f"{report['formulas']} formulas typeset, {report['search_hits']} search results for "
        f"'attention', {len(report['problems'])} problems"
    )
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
