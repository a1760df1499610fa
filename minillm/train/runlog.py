"""The metrics log of a training run: one JSON record a line in ``out_dir/log.jsonl``.

Taught in lesson 05 (pretraining): :func:`read_log` reads a run's records and :func:`plot_log`
draws its loss curves; the training loop appends with :func:`append_log` and, on resume, drops
records past the checkpoint with :func:`truncate_log`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

LOG_NAME = "log.jsonl"


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's JSONL log (``log.jsonl`` in its ``out_dir``, or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):  # a record torn by a kill mid-write: drop it, say so
                print(f"warning: {path}:{number}: skipped a torn last record", file=sys.stderr)
                break
            raise ValueError(f"{path}:{number} is not a JSON record ({err})") from None
    return records


def truncate_log(path: Path, last_step: int) -> None:
    """Keep only the records up to ``last_step`` (a resumed run rewrites what follows)."""
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if r.get("step", 0) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def plot_log(path_or_records: str | Path | list[dict[str, Any]], ax=None):
    """Plot training and validation loss against the step; returns the matplotlib Axes."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is in the course extra
        raise ImportError("plot_log needs matplotlib: pip install 'minillm[course]'") from err
    records = path_or_records if isinstance(path_or_records, list) else read_log(path_or_records)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval"]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train (batch)", alpha=0.7)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax
