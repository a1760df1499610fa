"""Execute every notebook in solutions/ with papermill: every exercise check must pass.

On failure the message names the notebook, the cell and the error.
"""

from __future__ import annotations

import papermill
import pytest
from conftest import ROOT

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_solution_notebook_passes(path, tmp_path):
    try:
        papermill.execute_notebook(
            str(path),
            str(tmp_path / path.name),
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        first_line = next((line for line in err.source.splitlines() if line.strip()), "")
        pytest.fail(
            f"{path.relative_to(ROOT)}: cell {err.cell_index} (starting {first_line[:60]!r}) "
            f"raised {err.ename}: {err.evalue}",
            pytrace=False,
        )
