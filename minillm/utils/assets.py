"""The data that ships inside the package (``minillm/assets/``): one place that knows where it is.

The corpus, GPT-2's tokenizer files, the evaluation probes, the chat page, the course model and
the benchmark results the lessons quote travel in the wheel, so every lesson runs offline from an installed package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["ASSETS_DIR", "SHIPPED_RESULTS", "asset_path", "bench_result"]

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def asset_path(*parts: str) -> Path:
    """The path of a shipped file or folder, e.g. ``asset_path("course_model", "card.json")``."""
    return ASSETS_DIR.joinpath(*parts)


SHIPPED_RESULTS = ("ablation", "course_recipe", "precision")
"""The benchmark results lessons quote, copied from ``bench/results`` by ``scripts/ship_results.py``."""


def bench_result(name: str) -> dict[str, Any]:
    """A benchmark's results as shipped: ``bench/results/<name>.json`` copied into the package.

    Lessons quote these, so they must read the same figures from an installed wheel as from a
    clone; ``tests/unit/test_shipped_results.py`` checks the copies equal the originals.

    Raises:
        ValueError: ``name`` is not one of :data:`SHIPPED_RESULTS`.
    """
    if name not in SHIPPED_RESULTS:
        raise ValueError(
            f"no shipped benchmark result {name!r}; shipped: {', '.join(SHIPPED_RESULTS)}"
        )
    return json.loads(asset_path("results", f"{name}.json").read_text(encoding="utf-8"))
