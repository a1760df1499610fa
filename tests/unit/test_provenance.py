"""Stored outputs come from one quiet, in-order run, and the title states that run's time.

``scripts/nbexec.py`` (``make notebooks``) records each run in the notebook's metadata
(``minillm_provenance``) and writes the title's machine-time sentence from it. This file checks
every stored lesson and solution against it, and checks the checks on made-up notebooks.
"""

from __future__ import annotations

import copy

import nbformat
import pytest
from conftest import ROOT
from nbexec import (
    PROVENANCE_FIELDS,
    PROVENANCE_KEY,
    execute_notebook,
    execution_order_problems,
    load_limit,
    machine_time_sentence,
    provenance_problems,
)

# Notebooks stored before nbexec recorded provenance. Their provenance check is SKIPPED (and says
# so) until the final quiet re-execution of every lesson and solution; then this set is emptied,
# and every notebook must pass. Their execution order is checked regardless.
ALLOW_WITHOUT_PROVENANCE: frozenset[str] = frozenset(
    {
        "notebooks/01_data.ipynb",
        "notebooks/02_tokenization.ipynb",
        "notebooks/03_attention.ipynb",
        "notebooks/04_gpt_model.ipynb",
        "notebooks/06_distributed.ipynb",
        "notebooks/08_fine_tuning.ipynb",
        "notebooks/09_evaluation.ipynb",
        "notebooks/13_interpretability.ipynb",
        "solutions/00_welcome_and_setup_solutions.ipynb",
        "solutions/01_data_solutions.ipynb",
        "solutions/02_tokenization_solutions.ipynb",
        "solutions/03_attention_solutions.ipynb",
        "solutions/04_gpt_model_solutions.ipynb",
        "solutions/05_pretraining_solutions.ipynb",
        "solutions/06_distributed_solutions.ipynb",
        "solutions/07_mixed_precision_solutions.ipynb",
        "solutions/08_fine_tuning_solutions.ipynb",
        "solutions/09_evaluation_solutions.ipynb",
        "solutions/10_quantization_solutions.ipynb",
        "solutions/11_serving_solutions.ipynb",
        "solutions/12_release_solutions.ipynb",
        "solutions/13_interpretability_solutions.ipynb",
    }
)

STORED = sorted(
    p.relative_to(ROOT).as_posix()
    for folder in ("notebooks", "solutions")
    for p in (ROOT / folder).glob("*.ipynb")
)


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / name, as_version=4)


@pytest.mark.parametrize("name", STORED)
def test_cells_were_executed_in_one_run_in_order(name):
    problems = execution_order_problems(_read(name))
    assert not problems, f"{name}: {problems}; re-execute it with scripts/nbexec.py --inplace"


@pytest.mark.parametrize("name", STORED)
def test_stored_outputs_match_their_provenance(name):
    nb = _read(name)
    if PROVENANCE_KEY not in nb.metadata and name in ALLOW_WITHOUT_PROVENANCE:
        pytest.skip(f"{name} is on ALLOW_WITHOUT_PROVENANCE until the final quiet re-execution")
    problems = provenance_problems(nb)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


def test_the_allow_list_names_only_notebooks_without_provenance():
    stale = [n for n in sorted(ALLOW_WITHOUT_PROVENANCE) if n not in STORED]
    assert not stale, f"ALLOW_WITHOUT_PROVENANCE names notebooks that do not exist: {stale}"
    done = [n for n in sorted(ALLOW_WITHOUT_PROVENANCE) if PROVENANCE_KEY in _read(n).metadata]
    assert not done, f"these have provenance now; remove them from ALLOW_WITHOUT_PROVENANCE: {done}"


# --- the checks themselves, on a small notebook executed here -----------------------------------

TITLE = (
    "# Lesson 99 — A test\n\n**Time.** Machine: 5 seconds on a 2-core CPU (somewhere). "
    "Learner: about an hour.\n"
)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A three-cell notebook (one empty code cell) executed by nbexec, as `make notebooks` would."""
    folder = tmp_path_factory.mktemp("provenance")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(TITLE),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(""),
        nbformat.v4.new_code_cell("import time\ntime.sleep(0.2)\nprint(x)"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "99_test.ipynb"
    nbformat.write(nb, path)
    execute_notebook(path, output_path=path)
    return nbformat.read(path, as_version=4)


def test_a_run_records_its_provenance_and_stamps_the_title(executed):
    provenance = executed.metadata[PROVENANCE_KEY]
    assert set(PROVENANCE_FIELDS) <= set(provenance)
    assert provenance["cell_seconds"][0][0] == 1 and [i for i, _ in provenance["cell_seconds"]] == [
        1,
        3,
    ]
    assert provenance["cell_seconds"][1][1] >= 0.2, "the sleeping cell's wall time"
    assert provenance["seconds"] >= provenance["cell_seconds"][1][1]
    assert provenance["cores"] >= 1 and provenance["cpu"]
    assert provenance["commit"] is None, "a notebook outside the checkout has no commit"
    title = executed.cells[0].source
    assert title.startswith("# Lesson 99 — A test\n\n" + machine_time_sentence(provenance))
    assert title.endswith("Learner: about an hour.\n")
    assert "somewhere" not in title
    # Everything but the load average holds however busy this machine is now.
    quiet = copy.deepcopy(executed)
    quiet.metadata[PROVENANCE_KEY].update(load_average_before=0.5, load_average_after=0.5)
    quiet.cells[0].source = quiet.cells[0].source.replace(
        machine_time_sentence(provenance), machine_time_sentence(quiet.metadata[PROVENANCE_KEY])
    )
    assert provenance_problems(quiet) == []


def _quiet(executed):
    nb = copy.deepcopy(executed)
    nb.metadata[PROVENANCE_KEY].update(load_average_before=0.5, load_average_after=0.5, cores=2)
    nb.cells[0].source = TITLE.replace(
        TITLE[TITLE.index("**Time.**") : TITLE.index("Learner:")],
        machine_time_sentence(nb.metadata[PROVENANCE_KEY]),
    )
    assert provenance_problems(nb) == []
    return nb


def test_a_title_that_disagrees_with_the_metadata_fails(executed):
    nb = _quiet(executed)
    nb.metadata[PROVENANCE_KEY]["seconds"] += 60
    assert any("title's machine time disagrees" in p for p in provenance_problems(nb))


def test_a_busy_run_fails_and_the_limit_scales_with_cores(executed):
    assert load_limit(2) == 1.5 and load_limit(16) == 12.0
    nb = _quiet(executed)
    # the run's own 2 torch threads account for 2.0 of the reading after it; 1.8 more is others'
    nb.metadata[PROVENANCE_KEY].update(load_average_after=3.8, torch_threads=2)
    nb.cells[0].source = TITLE.replace(
        TITLE[TITLE.index("**Time.**") : TITLE.index("Learner:")],
        machine_time_sentence(nb.metadata[PROVENANCE_KEY]),
    )
    assert [p for p in provenance_problems(nb) if "load average [0.5, 3.8] on 2 cores" in p]
    nb.metadata[PROVENANCE_KEY]["load_average_after"] = 2.0  # the run's own threads alone: quiet
    nb.cells[0].source = TITLE.replace(
        TITLE[TITLE.index("**Time.**") : TITLE.index("Learner:")],
        machine_time_sentence(nb.metadata[PROVENANCE_KEY]),
    )
    assert provenance_problems(nb) == []
    nb.metadata[PROVENANCE_KEY]["load_average_after"] = 3.8
    nb.metadata[PROVENANCE_KEY]["cores"] = 4  # 1.8 from others is quiet for 4 cores (limit 3.0)
    nb.cells[0].source = TITLE.replace(
        TITLE[TITLE.index("**Time.**") : TITLE.index("Learner:")],
        machine_time_sentence(nb.metadata[PROVENANCE_KEY]),
    )
    assert provenance_problems(nb) == []


def test_cells_out_of_order_or_from_another_run_fail(executed):
    nb = _quiet(executed)
    nb.cells[3].execution_count = 3  # a gap: 1, 3
    assert execution_order_problems(nb) and provenance_problems(nb)
    nb = _quiet(executed)
    nb.cells.append(nbformat.v4.new_code_cell("print('added after the run')", execution_count=3))
    assert execution_order_problems(nb) == []
    assert any("cells timed" in p for p in provenance_problems(nb))


def test_a_parameterised_run_or_missing_metadata_fails(executed):
    nb = _quiet(executed)
    nb.metadata[PROVENANCE_KEY]["parameters"] = {"x": 2}
    assert any("parameters" in p for p in provenance_problems(nb))
    del nb.metadata[PROVENANCE_KEY]
    assert any("no minillm_provenance" in p for p in provenance_problems(nb))
