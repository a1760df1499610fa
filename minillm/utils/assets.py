"""The data that ships inside the package (``minillm/assets/``): one place that knows where it is.

The corpus, GPT-2's tokenizer files, the evaluation probes, the chat page and the course model
travel in the wheel, so every lesson runs offline from an installed package.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS_DIR", "asset_path"]

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def asset_path(*parts: str) -> Path:
    """The path of a shipped file or folder, e.g. ``asset_path("course_model", "card.json")``."""
    return ASSETS_DIR.joinpath(*parts)
