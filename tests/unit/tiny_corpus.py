"""A tiny corpus for tests: distinct documents of pseudo-verse that survive cleaning and dedup."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ["thou", "art", "my", "lord", "and", "king", "the", "night"]
WORDS += ["is", "dark", "sweet", "love", "doth", "speak", "of", "death"]


def write_pseudo_verse(folder: Path, documents: int = 10, prefix: str = "play_") -> Path:
    """Write ``documents`` files of 40 random 8-word lines each (seeded) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for number in range(documents):
        lines = [" ".join(rng.choice(WORDS, size=8)).capitalize() + "." for _ in range(40)]
        text = f"ACT {number}\n\n" + "\n".join(lines) + "\n"
        (folder / f"{prefix}{number}.txt").write_text(text)
    return folder
