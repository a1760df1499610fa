"""The benchmark results lessons quote ship in the package, and equal bench/results."""

from __future__ import annotations

import io
import tokenize

import pytest
from conftest import ROOT

from minillm.utils import SHIPPED_RESULTS, asset_path, bench_result


@pytest.mark.parametrize("name", SHIPPED_RESULTS)
def test_shipped_copy_equals_the_benchmark_result(name):
    original = ROOT / "bench" / "results" / f"{name}.json"
    copy = asset_path("results", f"{name}.json")
    assert copy.read_bytes() == original.read_bytes(), (
        f"{copy} differs from {original}: run `python scripts/ship_results.py`"
    )


def test_every_shipped_result_is_listed():
    shipped = sorted(p.stem for p in asset_path("results").glob("*.json"))
    assert shipped == sorted(SHIPPED_RESULTS), "minillm/assets/results holds unlisted files"


def test_bench_result_reads_the_copy_and_rejects_other_names():
    assert bench_result("ablation")["table"], "the ablation table is empty"
    with pytest.raises(ValueError, match="no shipped benchmark result 'pretrain'"):
        bench_result("pretrain")


def _without_comments(source: str) -> str:
    """The cell's code with comments removed (a comment may name the file a result came from)."""
    lines = source.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return "\n".join(lines)


def test_lessons_read_no_repository_file():
    """A lesson may run alone from a wheel: it reads nothing from bench/ or a parent folder."""
    import nbformat

    offenders = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code":
                continue
            code = _without_comments(cell.source)
            for needle in ("bench/results", '"bench"', ".parents", "../", "figures."):
                if needle in code:
                    offenders.append(f"{path.name} cell {index}: {needle}")
    assert not offenders, "lessons read repository files:\n" + "\n".join(offenders)
