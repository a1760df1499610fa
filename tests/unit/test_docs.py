"""The README, CONTRIBUTING.md and the book's pages agree with the repository.

- every relative link or cited path exists (no reference to a file the repository lacks);
- the repository's address is written once (pyproject's ``[project.urls] Repository``) and every
  GitHub or Colab link uses it;
- the README's lesson table follows notebooks/: a row whose notebook exists links it and opens it
  in Colab, a row whose notebook is missing says *planned*; so does every "lesson NN" in the
  README and the book's pages. Adding a lesson needs only its row (and dropping "planned").
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "book").glob("*.md"))]
LESSONS = {p.name[:2]: p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
# Written by a build, or by the learner's own run; cited as where output goes, never committed.
GENERATED = {
    ".venv",
    "book/_build",
    "book/_build/html",
    "book/_build/html/index.html",
    "book/_toc.yml",
    "book/api.md",
    "book/timings.md",
    "book/lessons",
    "book/solutions",
    "data/course",
    "runs/course",
    "runs/course/checkpoint.safetensors",
    "timings.md",  # book/timings.md, included by the book's pages
}
# Cited files that another branch of issue 10 adds; the lead empties this when merging.
PENDING_PATHS: dict[str, str] = {}
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
PATHLIKE = re.compile(r"^[\w.-]+(/[\w.-]+)*/?$")
SUFFIXES = (".md", ".py", ".json", ".toml", ".yml", ".yaml", ".txt", ".ipynb", ".svg", ".cfg")


def repo_url() -> str:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    return urls["Repository"].rstrip("/")


def cited_paths(doc: Path) -> list[tuple[str, Path]]:
    """(as written, resolved) for every relative link and every backticked path in ``doc``."""
    text = doc.read_text()
    found = []
    for target in LINK.findall(text):
        if re.match(r"^([a-z]+:|#)", target):
            continue
        target = target.split("#")[0]
        found.append((target, (doc.parent / target).resolve()))
    for code in CODE.findall(text):
        code = code.split("::")[0].rstrip(".,:")
        looks_like_path = ("/" in code or code.endswith(SUFFIXES)) and PATHLIKE.match(code)
        if looks_like_path and not code.startswith(("/", "~", ".", "-")):
            base = ROOT if not (doc.parent / code).exists() else doc.parent
            found.append((code, (base / code).resolve()))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_cited_path_exists(doc):
    missing = []
    for written, resolved in cited_paths(doc):
        relative = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else ""
        if resolved.exists() or relative in GENERATED or written in GENERATED:
            continue
        if relative in PENDING_PATHS:
            continue
        missing.append(written)
    assert not missing, f"{doc.relative_to(ROOT)} cites paths the repository lacks: {missing}"


def test_pending_paths_are_still_missing():
    arrived = sorted(path for path in PENDING_PATHS if (ROOT / path).exists())
    assert not arrived, f"these files exist now; remove them from PENDING_PATHS: {arrived}"


def test_no_reference_to_the_external_blueprint():
    for doc in [*DOCS, ROOT / "tests" / "unit" / "test_notebook_structure.py"]:
        assert "COURSE_DESIGN" not in doc.read_text(), (
            f"{doc.relative_to(ROOT)} cites COURSE_DESIGN.md, which is not in the repository"
        )


def all_links(text: str) -> list[str]:
    return re.findall(r"https?://[^\s)\"'>\]]+", text)


def markdown_of_notebooks() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
        (ROOT / "solutions").glob("*.ipynb")
    ):
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        out.append((f"{path.parent.name}/{path.name}", text))
    return out


def test_every_repository_link_uses_the_one_repository_url():
    url = repo_url()
    owner_name = url.removeprefix("https://github.com/")
    sources = [(d.relative_to(ROOT).as_posix(), d.read_text()) for d in DOCS]
    sources.append(("book/_config.yml", (ROOT / "book" / "_config.yml").read_text()))
    sources += markdown_of_notebooks()
    wrong = []
    for name, text in sources:
        for link in all_links(text):
            github = re.match(r"https?://github\.com/([^/]+/[^/.#?]+)", link)
            colab = re.match(r"https?://colab\.research\.google\.com/github/([^/]+/[^/]+)/", link)
            repo = (github or colab).group(1) if (github or colab) else None
            if repo is not None and repo != owner_name:
                wrong.append(f"{name}: {link}")
    assert not wrong, f"links to a repository other than {url} (pyproject.toml): {wrong}"


def colab_url(notebook: str) -> str:
    owner_name = repo_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{notebook}"


def readme_rows() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"^\|\s*(\d\d)\s*\|", line)
        if match:
            assert match.group(1) not in rows, f"README lists lesson {match.group(1)} twice"
            rows[match.group(1)] = line
    return rows


def test_readme_table_has_a_row_for_every_lesson():
    rows = readme_rows()
    missing = sorted(set(LESSONS) - set(rows))
    assert not missing, f"notebooks/ has lessons the README's table lacks: {missing}"


@pytest.mark.parametrize("number", sorted(readme_rows()))
def test_readme_row_links_its_notebook_or_says_planned(number):
    row = readme_rows()[number]
    lesson = LESSONS.get(number)
    if lesson is None:
        assert "planned" in row, f"lesson {number} has no notebook; its README row must say planned"
        assert "notebooks/" not in row, f"lesson {number} has no notebook to link: {row}"
        return
    assert "planned" not in row, f"lesson {number} exists ({lesson.name}); drop 'planned': {row}"
    assert f"](notebooks/{lesson.name})" in row, f"row {number} must link notebooks/{lesson.name}"
    assert f"]({colab_url(lesson.name)})" in row, (
        f"row {number} must open the lesson in Colab: expected {colab_url(lesson.name)}"
    )


LESSON_REF = re.compile(r"\b[Ll]essons?\s+(\d\d(?:\s*(?:[–-]|,|and|or|to)\s*\d\d)*)")


def lesson_numbers(listed: str) -> list[str]:
    numbers = []
    for start, end in re.findall(r"(\d\d)(?:\s*[–-]\s*(\d\d))?", listed):
        last = end or start
        numbers += [f"{n:02d}" for n in range(int(start), int(last) + 1)]
    return numbers


def what_follows(text: str, end: int) -> str:
    """The clause after a reference: a parenthesis right after it, else up to the sentence end."""
    rest = text[end:]
    if rest.lstrip().startswith("("):
        return rest[: rest.find(")") + 1]
    stop = re.search(r"[.;:)]\s|\n\n|\|", rest)
    return rest[: stop.start() if stop else len(rest)]


def planned_problems(markdown: str, existing: set[str]) -> list[str]:
    """Each "lesson NN" whose lesson is missing but not marked planned, or the reverse."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    text = re.sub(r"[ \t]*\n[ \t]*(?!\n)", " ", text)  # one paragraph per line
    wrong = []
    for match in LESSON_REF.finditer(text):
        numbers = lesson_numbers(match.group(1))
        planned = "planned" in what_follows(text, match.end())
        for number in numbers:
            if number not in existing and not planned:
                wrong.append(f"{match.group(0)!r}: lesson {number} is not written; say planned")
        if planned and all(number in existing for number in numbers):
            wrong.append(f"{match.group(0)!r}: the lesson exists now; drop 'planned'")
    return wrong


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_unwritten_lessons_are_marked_planned(doc):
    wrong = planned_problems(doc.read_text(), set(LESSONS))
    assert not wrong, f"{doc.relative_to(ROOT)}: " + "; ".join(wrong)


@pytest.mark.parametrize(
    "text, problems",
    [
        ("KV cache (lesson 11, planned).", 0),
        ("the switches lessons 06 and 07 (both planned) will teach", 0),
        ("lessons 06–08 are\nplanned.", 0),
        ("Lesson 05 trains it; lesson 11 serves it.", 1),
        ("lessons 10–12 serve it.", 3),
        ("see lesson 05 (planned)", 1),
        ("```\nlesson 11\n```", 0),
    ],
)
def test_the_planned_rule_reads_references_as_intended(text, problems):
    found = planned_problems(text, existing={"00", "05"})
    assert len(found) == problems, found


def test_readme_installs_the_course_extra_from_the_repository():
    readme = (ROOT / "README.md").read_text()
    line = f'pip install -q "minillm[course] @ git+{repo_url()}"'
    assert line in readme, f"the README's Colab line must be: {line}"
    assert "<this repository>" not in readme, "the README still has a placeholder for the URL"
