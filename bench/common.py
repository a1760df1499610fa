"""Shared pieces of the benchmark scripts: timing, machine description, atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minillm.utils import git_commit, load_average, machine_facts

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Fastest wall time of ``repeats`` calls (other jobs only ever slow a call down), and the
    result of the last call."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def machine_info(**extra: Any) -> dict[str, Any]:
    """What the figures were measured on: the same facts ``scripts/nbexec.py`` records for a
    lesson (CPU model, cores, torch threads, versions, git commit) and the load average at the
    start; :func:`write_results` adds the load average at the end."""
    facts = machine_facts()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": facts["cpu"],  # speed figures differ between CPU models, so name the one used
        "cpu_count": facts["cores"],
        "torch_threads": facts["torch_threads"],
        "python": facts["python"],
        "torch": facts["torch"],
        "minillm": facts["minillm"],
        "commit": git_commit(Path(__file__).resolve().parent),
        "load_average_1min_at_start": facts["load_average"],
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
    }


def write_results(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (a temporary file, then a rename).

    A ``machine`` entry (from :func:`machine_info`) gets the load average now, at the end, so the
    result says whether other work shared the machine while it ran.
    """
    if isinstance(data.get("machine"), dict):
        data = {**data, "machine": {**data["machine"], "load_average_1min_at_end": load_average()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)
