"""Execute the lessons listed in parameter_runs.py with their alternative parameters."""

from __future__ import annotations

import pytest
from conftest import ROOT
from nbexec import execute_notebook
from parameter_runs import PARAMETER_RUNS

CASES = [
    pytest.param(name, params, id=f"{name}-{index}")
    for name, runs in PARAMETER_RUNS.items()
    for index, params in enumerate(runs)
]


def test_every_listed_notebook_exists():
    missing = [name for name in PARAMETER_RUNS if not (ROOT / "notebooks" / name).exists()]
    assert not missing, f"parameter_runs.py lists notebooks that do not exist: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "params"), CASES)
def test_lesson_runs_with_parameters(name, params, tmp_path):
    nb = ROOT / "notebooks" / name
    # Unknown parameter names would be silently added by papermill; catch typos here.
    source = next(c.source for c in _read(nb).cells if "parameters" in c.metadata.get("tags", []))
    unknown = [key for key in params if f"{key} =" not in source]
    assert not unknown, f"{name} has no parameter(s) {unknown} in its parameters cell"
    execute_notebook(nb, parameters=params, output_path=tmp_path / name)


def _read(path):
    import nbformat

    return nbformat.read(path, as_version=4)
