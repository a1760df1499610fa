"""Every lesson runs from the built wheel alone, the way a learner's Colab runs it.

How the environment is made, offline and in seconds:

1. The package's sources (``minillm/``, ``pyproject.toml``, README, LICENSE) are copied to a
   temporary folder and ``pip wheel --no-deps --no-build-isolation --no-index`` builds the wheel
   there: no network, and no stale ``build/`` folder of the clone leaks into it.
2. ``python -m venv --without-pip`` makes a fresh environment. The test interpreter is itself a
   virtual environment, so ``--system-site-packages`` would see the bare base Python, not the
   course's dependencies; instead a ``.pth`` file in the new environment's site-packages names the
   test environment's site-packages. A plain path line in a ``.pth`` file adds that folder to
   ``sys.path`` *after* the environment's own site-packages, and does not run the ``.pth`` files
   inside it, so the clone's editable install of ``minillm`` is not seen.
3. ``pip install --no-deps --no-index --target <new site-packages> <wheel>`` unpacks the wheel into
   the new environment, ahead of everything the ``.pth`` file adds.
4. A Jupyter kernel spec (in a temporary ``JUPYTER_PATH``) starts that environment's Python with
   ``PYTHONPATH`` emptied; each lesson is copied alone into an empty folder and executed there
   with papermill, at the small parameters of ``parameter_runs.py`` where a lesson has them.

A lesson passes when no cell raises outside the exercise stubs (cells tagged ``raises-exception``
that raise ``NotImplementedError`` until the learner solves them), and the kernel imported the
wheel's ``minillm``, not the repository's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from parameter_runs import PARAMETER_RUNS

LESSONS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNEL_NAME = "minillm-wheel"
STUB_ERROR = "NotImplementedError"  # what an unsolved exercise raises
CELL_TIMEOUT_S = 900


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> dict[str, Path]:
    """Build the wheel, install it into a fresh environment, and register that kernel."""
    base = tmp_path_factory.mktemp("wheel-env")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "minillm", source / "minillm", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = base / "dist"
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--quiet", "-w", dist, source,
    )  # fmt: skip
    (wheel,) = dist.glob("minillm-*.whl")

    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    (site / "course-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
        "--target", site, wheel,
    )  # fmt: skip

    kernels = base / "jupyter" / "kernels" / KERNEL_NAME
    kernels.mkdir(parents=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "minillm from the wheel",
        "language": "python",
        "env": {"PYTHONPATH": "", "MPLBACKEND": "Agg"},
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    return {"wheel": wheel, "python": python, "site": site, "jupyter": base / "jupyter"}


def test_the_wheel_ships_what_lessons_read(wheel_env):
    import zipfile

    names = set(zipfile.ZipFile(wheel_env["wheel"]).namelist())
    for needed in (
        "minillm/model/diagrams.py",
        "minillm/utils/lessons.py",
        "minillm/assets/results/ablation.json",
        "minillm/assets/results/course_recipe.json",
        "minillm/assets/results/precision.json",
    ):
        assert needed in names, f"the wheel lacks {needed}"


def test_the_environment_imports_the_wheels_minillm(wheel_env, tmp_path):
    out = _run(
        wheel_env["python"], "-c", "import minillm, torch; print(minillm.__file__)", cwd=tmp_path
    )
    assert Path(out.strip()).is_relative_to(wheel_env["site"]), out
    assert not Path(out.strip()).is_relative_to(ROOT), out


@pytest.mark.slow
@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_alone_from_the_wheel(name, wheel_env, tmp_path, monkeypatch):
    import papermill

    folder = tmp_path / "learner"
    folder.mkdir()
    shutil.copy2(ROOT / "notebooks" / name, folder / name)
    probe = nbformat.v4.new_code_cell(
        "import minillm as _m\nprint('MINILLM_FILE', _m.__file__)", metadata={"tags": ["probe"]}
    )
    nb = nbformat.read(folder / name, as_version=4)
    nb.cells.append(probe)
    nbformat.write(nb, folder / name)

    monkeypatch.setenv("JUPYTER_PATH", str(wheel_env["jupyter"]))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    parameters = PARAMETER_RUNS.get(name, [{}])[0]
    # papermill raises on any error output, the exercise stubs' included; it has written the
    # executed notebook by then, and the checks below judge it cell by cell.
    with contextlib.suppress(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(folder / name),
            str(tmp_path / f"executed-{name}"),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(folder),
            execution_timeout=CELL_TIMEOUT_S,
            progress_bar=False,
        )

    executed = nbformat.read(tmp_path / f"executed-{name}", as_version=4)
    unexpected = [
        f"cell {index}: {output['ename']}: {output['evalue'][:200]}"
        for index, cell in enumerate(executed.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
        and (
            "raises-exception" not in cell.metadata.get("tags", []) or output["ename"] != STUB_ERROR
        )
    ]
    assert not unexpected, f"{name} from the wheel:\n" + "\n".join(unexpected)
    printed = "".join(o.get("text", "") for o in executed.cells[-1].get("outputs", []))
    used = Path(printed.split("MINILLM_FILE", 1)[1].strip())
    assert used.is_relative_to(wheel_env["site"]), f"{name} imported {used}, not the wheel's copy"
