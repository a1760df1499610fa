"""A linter for what can be checked mechanically in a lesson (CONTRIBUTING.md, "Teaching").

    python scripts/lesson_lint.py                 # every lesson and solution, one line a finding
    python scripts/lesson_lint.py notebooks/05_pretraining.ipynb

Rules:

- ``number``: a number quoted in a Markdown cell that no output of the notebook printed, no code
  cell of it holds, and no results file it names (``bench/results/<name>.json``) contains. A
  number matches when the printed one, rounded to the quoted number's decimals, equals it (also
  as a percentage). Small integers, years, lesson numbers, LaTeX maths and the constants in
  ``ALLOWED`` are not checked.
- ``wording``: words written for the team, not the learner ("the lead", "helper", "issue 12").
- ``figure``: a ``figsize`` smaller than ``MIN_FIGSIZE`` (unreadable at book width).
- ``check-holds-solution``: an exercise's check cell contains three or more consecutive lines of
  its solution (from ``solutions/``), so copying the check solves the exercise.

Exit status 1 when there are findings (0 otherwise); ``tests/unit/test_lesson_lint.py`` runs the
rules in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MIN_FIGSIZE = (6.0, 3.0)  # inches (width, height): below this, 8-point text is small in the book
ALLOWED = {"1e-6", "1e-5", "1e-8", "1e-4", "0.5", "0.9", "0.95", "0.999", "2.0", "1.0", "0.0"}
TEAM_WORDING = re.compile(
    r"\b(the lead\b|lead engineer|helper (?:session|agent)s?|issue \d+|TODO|FIXME|the team\b|this session|owns? its)",
    re.IGNORECASE,
)
# A quoted number: digits with a decimal point or a thousands separator, or 4+ digits; optional %.
NUMBER = re.compile(r"(?<![\w.\-/^_])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d{4,})(%?)(?![\w.]\d)")
PRINTED = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.DOTALL)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
SECTION_REF = re.compile(r"(?:[Ss]ection|§|[Ss]ections|and|to|(?:^|\n)#+)\s+$")
VERSION_OF = re.compile(r"(?:torch|[Pp]y[Tt]orch|Python|transformers|numpy|version|v)\s*$")
CODE_SPAN = re.compile(r"`[^`\n]+`")
RESULTS_FILE = re.compile(r"bench/results/([\w.-]+\.json)")
FIGSIZE = re.compile(r"figsize\s*=\s*\(\s*([\d.]+)\s*,\s*([\d.]+)\s*\)")


@dataclass(frozen=True)
class Finding:
    path: str
    cell: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: cell {self.cell}: {self.rule}: {self.detail}"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            data = out.get("data", {})
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in data:
                    parts.append(data[kind])
    return "\n".join(parts)


def _results_text(markdown: str, root: Path) -> str:
    texts = []
    for name in set(RESULTS_FILE.findall(markdown)):
        path = root / "bench" / "results" / name
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
    return "\n".join(texts)


def _values(text: str) -> list[float]:
    values = []
    for token in PRINTED.findall(text):
        try:
            values.append(float(token.replace(",", "")))
        except ValueError:
            continue
    return values


def _backed(quoted: str, percent: bool, values: Iterable[float], raw: str) -> bool:
    if quoted in raw:
        return True
    number = float(quoted.replace(",", ""))
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    for value in values:
        for candidate in (value, value * 100) if percent or decimals else (value,):
            if round(abs(candidate), decimals) == number:
                return True
    return False


def quoted_numbers(markdown: str) -> Iterator[tuple[str, bool]]:
    """(number, is a percentage) for every number a Markdown cell quotes outside maths and code."""
    prose = CODE_SPAN.sub(" ", MATH.sub(" ", FENCE.sub(" ", markdown)))
    prose = re.sub(r"^(#+)[ \t]+", r"\1 ", prose, flags=re.M)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)  # link targets
    for match in NUMBER.finditer(prose):
        text, percent = match.group(1), bool(match.group(2))
        if SECTION_REF.search(prose[max(0, match.start() - 12) : match.start()]):
            continue  # "section 6.4" names a section, it quotes no measurement
        if VERSION_OF.search(prose[max(0, match.start() - 14) : match.start()]):
            continue  # "torch 2.13" is a version
        plain = text.replace(",", "")
        if text in ALLOWED or ("." not in text and "," not in text and 1900 <= int(plain) <= 2100):
            continue
        yield text, percent


def lint_numbers(nb, path: str, root: Path = ROOT) -> Iterator[Finding]:
    raw = _outputs_text(nb)
    values = _values(raw)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or index == 0:  # the title's Time line is checked elsewhere
            continue
        extra = _results_text(cell.source, root)
        extra_values = _values(extra) if extra else []
        for text, percent in quoted_numbers(cell.source):
            if not _backed(text, percent, values + extra_values, raw + extra):
                shown = f"{text}{'%' if percent else ''}"
                yield Finding(
                    path, index, "number", f"{shown} is printed by no cell and no results file"
                )


def lint_wording(nb, path: str) -> Iterator[Finding]:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for match in TEAM_WORDING.finditer(cell.source):
                yield Finding(path, index, "wording", f"{match.group(0)!r} is written for the team")


def lint_figures(nb, path: str) -> Iterator[Finding]:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for match in FIGSIZE.finditer(cell.source):
            width, height = float(match.group(1)), float(match.group(2))
            if width < MIN_FIGSIZE[0] or height < MIN_FIGSIZE[1]:
                yield Finding(
                    path, index, "figure", f"figsize=({width:g}, {height:g}) is below {MIN_FIGSIZE}"
                )


def _meaningful_lines(source: str) -> list[str]:
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in ("return", "pass", ")", "]"):
            continue
        lines.append(stripped)
    return lines


def lint_check_cells(nb, path: str, solution) -> Iterator[Finding]:
    """Flag a check cell that holds three consecutive lines of the solved stub."""
    stubs = [
        (i, c) for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "NotImplementedError" in c.source
        and not c.source.lstrip().startswith("# Check")
    ]  # fmt: skip
    solved = {}
    for cell in solution.cells:
        if cell.cell_type == "code":
            for name in re.findall(r"^def (\w+)", cell.source, flags=re.M):
                solved[name] = _meaningful_lines(cell.source)
    for index, stub in stubs:
        names = re.findall(r"^def (\w+)", stub.source, flags=re.M)
        answer = [line for n in names for line in solved.get(n, [])]
        answer = [
            a for a in answer if not a.startswith(("def ", '"""', "raise NotImplementedError"))
        ]
        if len(answer) < 3:
            continue
        for check_index in range(index + 1, min(index + 3, len(nb.cells))):
            check = nb.cells[check_index]
            if check.cell_type != "code" or not check.source.lstrip().startswith("# Check"):
                continue
            lines = _meaningful_lines(check.source)
            joined = "\n".join(lines)
            for start in range(len(answer) - 2):
                window = "\n".join(answer[start : start + 3])
                if window in joined:
                    yield Finding(
                        path, check_index, "check-holds-solution",
                        f"the check cell repeats the solution of {', '.join(names)}: {answer[start]!r}",
                    )  # fmt: skip
                    break


def lint(path: Path, root: Path = ROOT) -> list[Finding]:
    nb = nbformat.read(path, as_version=4)
    name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    findings = [*lint_numbers(nb, name, root), *lint_wording(nb, name), *lint_figures(nb, name)]
    solution = root / "solutions" / f"{path.stem}_solutions.ipynb"
    if path.parent.name == "notebooks" and solution.is_file():
        findings += lint_check_cells(nb, name, nbformat.read(solution, as_version=4))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: every lesson)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    findings = [f for p in paths for f in lint(p.resolve())]
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], indent=1))
    else:
        print("\n".join(map(str, findings)) or "no findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
