"""Every lesson and solution follows the course conventions (CONTRIBUTING.md, "Lessons").

These checks read the notebooks without executing them, so a new lesson is held to the same
rules as soon as it is added, with no change to the harness.
"""

from __future__ import annotations

import ast
import re
import sys
import tempfile
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


# --- Output hygiene and check-cell messages (issue 10) -------------------------------------------

# Notebooks whose stored outputs or check cells were written before these rules and are being
# rewritten (issue 10). Each is skipped by the hygiene tests below, with this reason, until it is
# re-executed clean; the lead empties this set. A notebook listed here that already passes makes
# `test_hygiene_pending_is_still_needed` fail, so the set only shrinks.
HYGIENE_PENDING: set[str] = set()
PENDING_REASON = (
    "issue 10: stored outputs / check cells predate the hygiene rules; the lesson is being "
    "rewritten and re-executed, then removed from HYGIENE_PENDING"
)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Absolute paths of a machine: home folders, temporary folders, environments and packages.
MACHINE_PATH = re.compile(
    r"(?<![\w.~])(?:"
    r"/root(?=[/\s'\"):]|$)|/home/[^/\s]+|/Users/[^/\s]+|[A-Za-z]:\\Users\\"
    r"|/tmp/|/var/folders/|/private/var/|/var/tmp/"
    r")"
    r"|[^\s'\"]*site-packages|[^\s'\"]*/\.venv/|ipykernel_\d+",
    re.MULTILINE,
)
# The warnings module prints "path:line: SomeWarning: message"; nothing else ends in "Warning:".
PYTHON_WARNING = re.compile(r"\b[A-Za-z]*Warning: ")
PROGRESS_BAR = re.compile(r"\d+%\|")


def machine_locations() -> list[str]:
    """Where this checkout, its Python and its temporary folder live (also machine paths)."""
    places = {
        ROOT,
        Path.home(),
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(tempfile.gettempdir()),
    }
    return sorted({str(p) for p in places if len(p.parts) > 2 or str(p) in ("/root", "/tmp")})


def output_texts(cell) -> list[tuple[str, str]]:
    """(kind, text) for every stored output of a code cell, ANSI colours removed."""
    texts = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            texts.append((f"stream {out.get('name')}", out.get("text", "")))
        elif kind == "error":
            texts.append(("error", "\n".join(out.get("traceback", []))))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/") or mime == "application/json":
                text = value if isinstance(value, str) else "".join(map(str, value))
                texts.append((mime, text))
    return [(kind, ANSI.sub("", text)) for kind, text in texts]


def hygiene_problems(path: Path) -> list[str]:
    """Everything wrong with a notebook's stored outputs, one line each (cell index first)."""
    problems = []
    locations = machine_locations()
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        bars = 0
        for kind, text in output_texts(cell):
            found = [m.group(0) for m in MACHINE_PATH.finditer(text)]
            found += [place for place in locations if place in text]
            if found:
                problems.append(f"cell {index} ({kind}): machine path {found[0]!r}")
            warning = PYTHON_WARNING.search(text)
            if warning and kind != "error":
                line = next(ln for ln in text.splitlines() if warning.group(0) in ln)
                problems.append(f"cell {index} ({kind}): Python warning {line.strip()[:120]!r}")
            if kind.startswith("stream") and "\r" in text:
                problems.append(f"cell {index} ({kind}): progress-bar redraws (\\r) are stored")
            bars += sum(1 for line in text.splitlines() if PROGRESS_BAR.search(line))
        if bars > 1:
            problems.append(f"cell {index}: a progress bar stored as {bars} lines (keep the last)")
    return problems


def parse_cell(source: str) -> ast.Module:
    """Parse a code cell, blanking IPython magics and shell lines (``%``, ``!``) first."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    return ast.parse("\n".join(lines))


def bare_asserts(path: Path) -> list[str]:
    """Asserts in check cells that carry no message (a wrong answer would show nothing)."""
    found = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code" or "check" not in tags(cell):
            continue
        for node in ast.walk(parse_cell(cell.source)):
            if isinstance(node, ast.Assert) and node.msg is None:
                found.append(f"cell {index} line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


ALL_NOTEBOOKS = LESSONS + SOLUTIONS


def skip_if_pending(path: Path) -> None:
    if path.name in HYGIENE_PENDING:
        pytest.skip(f"{path.name}: {PENDING_REASON}")


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=[p.name for p in ALL_NOTEBOOKS])
def test_stored_outputs_have_no_machine_paths_warnings_or_redrawn_bars(path):
    skip_if_pending(path)
    problems = hygiene_problems(path)
    assert not problems, (
        f"{path.relative_to(ROOT)} stores outputs a reader should not see (fix the cause, e.g. "
        "print a path relative to the cache, silence the warning at its source, `leave=False` "
        "or one final line for a bar; then re-execute with scripts/nbexec.py --inplace):\n  "
        + "\n  ".join(problems)
    )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=[p.name for p in ALL_NOTEBOOKS])
def test_every_assert_in_a_check_cell_says_what_it_expected(path):
    skip_if_pending(path)
    bare = bare_asserts(path)
    assert not bare, (
        f"{path.relative_to(ROOT)}: every assert in a check cell needs a message saying what was "
        "expected and what came (assert got == want, f'expected {want}, got {got}'):\n  "
        + "\n  ".join(bare)
    )


def test_hygiene_pending_names_real_notebooks():
    names = {p.name for p in ALL_NOTEBOOKS}
    stale = sorted(HYGIENE_PENDING - names)
    assert not stale, f"HYGIENE_PENDING names notebooks that do not exist: {stale}"


def lacks_colab_badge(path: Path) -> bool:
    if path.parent.name != "notebooks":
        return False
    owner_name = repository_url().removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{path.name}"
    return f"]({url})" not in nbformat.read(path, as_version=4).cells[0].source


def test_hygiene_pending_is_still_needed():
    clean = sorted(
        path.name
        for path in ALL_NOTEBOOKS
        if path.name in HYGIENE_PENDING
        and not hygiene_problems(path)
        and not bare_asserts(path)
        and not lacks_colab_badge(path)
    )
    assert not clean, (
        f"these notebooks now pass the hygiene checks; remove them from HYGIENE_PENDING: {clean}"
    )


SAMPLE_OUTPUTS = {
    "/root/.cache/minillm/course-data-ca1a21e961ae": True,
    "python 3.11.7 (/opt/env/.venv/bin/python)": True,
    "/usr/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found": True,
    "/tmp/ipykernel_19718/3008250835.py:10: UserWarning: ran out of pairs": True,
    "/home/alice/minillm/notebooks": True,
    "cache: ~/.cache/minillm/course-data-ca1a21e961ae": False,
    "tokens: 120 ids in 0.3 s (tokens/s 400)": False,
    "ratio 2/3 and a/b paths": False,
}


@pytest.mark.parametrize("text, dirty", SAMPLE_OUTPUTS.items(), ids=range(len(SAMPLE_OUTPUTS)))
def test_the_hygiene_rules_catch_what_they_should(tmp_path, text, dirty):
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("x")
    cell.outputs = [new_output("stream", name="stdout", text=text + "\n")]
    path = tmp_path / "00_x.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    assert bool(hygiene_problems(path)) is dirty, (text, hygiene_problems(path))


def test_a_progress_bar_on_two_lines_is_caught(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("train()")
    cell.outputs = [
        new_output("stream", name="stderr", text="train:  50%|#    | 1/2\ntrain: 100%|#####| 2/2\n")
    ]
    path = tmp_path / "00_x.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    assert any("2 lines" in p for p in hygiene_problems(path)), hygiene_problems(path)


def test_bare_asserts_in_check_cells_are_found(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook

    cell = new_code_cell("%time x = 1\nassert x == 1, f'expected 1, got {x}'\nassert x")
    cell.metadata["tags"] = ["check"]
    path = tmp_path / "00_x.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    assert bare_asserts(path) == ["cell 0 line 3: assert x"], bare_asserts(path)


def repository_url() -> str:
    import tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    return urls["Repository"].rstrip("/")


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_title_cell_has_a_colab_badge_for_this_lesson(path):
    skip_if_pending(path)
    owner_name = repository_url().removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{path.name}"
    assert not lacks_colab_badge(path), (
        f"{path.name}: the title cell needs the Colab badge (CONTRIBUTING.md), expected a link to "
        f"{url}"
    )
