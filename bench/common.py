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

import torch

from minillm.utils import cpu_name

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
    """What the figures were measured on, including how busy the machine was at the start."""
    load_1min = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_name(),  # speed figures differ between CPU models, so name the one used
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1min_at_start": load_1min,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
    }


def write_results(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)
