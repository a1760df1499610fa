"""Copy the benchmark results the lessons quote into the package, so a wheel carries them.

A lesson never reads a file of the repository (it may run from an installed wheel, alone in a
folder); what it quotes from ``bench/results/<name>.json`` it reads with
``minillm.utils.bench_result(name)`` from ``minillm/assets/results/<name>.json``. Run this after
re-running one of those benchmarks; ``tests/unit/test_shipped_results.py`` fails until you do.

    python scripts/ship_results.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minillm.utils import SHIPPED_RESULTS  # noqa: E402  (the repository's package, not an installed one)

SOURCE = ROOT / "bench" / "results"
TARGET = ROOT / "minillm" / "assets" / "results"


def ship() -> list[Path]:
    """Copy each shipped result (atomically) and return the copies' paths."""
    TARGET.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in SHIPPED_RESULTS:
        source = SOURCE / f"{name}.json"
        if not source.is_file():
            raise SystemExit(f"{source} is missing: run `python bench/{name}.py` first")
        target = TARGET / source.name
        tmp = target.with_suffix(".json.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        copies.append(target)
    return copies


if __name__ == "__main__":
    for path in ship():
        print(f"shipped {path.relative_to(ROOT)}")
