"""Reproducibility, device choice and the environment check.

Taught in lesson 00 (welcome and setup). Every later lesson starts with
``seed_everything`` and ``auto_device``; instructors run ``python -m minillm doctor``
in the room before a workshop.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEVICE_ENV_VAR = "MINILLM_DEVICE"
"""Environment variable that overrides :func:`auto_device` (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""

_VALID_DEVICE_TYPES = ("cpu", "cuda", "mps")


MAX_SEED = 2**63 - 1
"""The largest seed accepted (PyTorch's generators take 64 bits; headroom for per-rank offsets)."""


def check_seed(seed: object, what: str = "seed") -> int:
    """Return ``seed`` if it is an int in ``[0, MAX_SEED]``; otherwise raise a clear error.

    Raises:
        ValueError: a bool, a non-int, a negative or a too-large value.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be a non-negative int below 2**63, got {seed!r}")
    return seed


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove that files can be written there, before any work.

    Raises:
        ValueError: ``path`` (or a parent) is a file, or the folder cannot be created or written
            (read-only, no permission); the message names the folder.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".minillm-write-test-")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise ValueError(f"{what} {path} is a file, not a folder; choose another path") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{what} {path} is not writable ({reason}); choose another path") from None
    return path


def ensure_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written later (its folder is created).

    Raises:
        ValueError: ``path`` is a folder, or its folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} exists and is read-only; choose another path")
    ensure_writable_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what}")
    return path


def seed_everything(seed: int = 1337) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so that runs repeat exactly.

    Args:
        seed: an integer in ``[0, 2**63 - 1]``.
    """
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _device_available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        return device.index is None or device.index < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return False


def auto_device(override: str | None = None) -> torch.device:
    """Pick the fastest available device: CUDA, then Apple MPS, then CPU.

    The choice can be forced with the ``override`` argument or the ``MINILLM_DEVICE``
    environment variable (the argument wins), for example ``MINILLM_DEVICE=cpu`` to
    reproduce CPU results on a machine with a GPU.

    Raises:
        ValueError: the override names an unknown device type or one that is not available.
    """
    requested = override if override is not None else os.environ.get(DEVICE_ENV_VAR, "")
    requested = requested.strip()
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {requested!r} (from {'argument' if override else DEVICE_ENV_VAR}); "
                f"allowed: {', '.join(_VALID_DEVICE_TYPES)}, optionally with an index like 'cuda:1'"
            ) from err
        if device.type not in _VALID_DEVICE_TYPES:
            raise ValueError(
                f"unsupported device type {device.type!r}; allowed: {', '.join(_VALID_DEVICE_TYPES)}"
            )
        if not _device_available(device):
            raise ValueError(
                f"device {requested!r} was requested but is not available on this machine; "
                f"unset {DEVICE_ENV_VAR} or choose 'cpu'"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# doctor: the environment check
# ---------------------------------------------------------------------------------------------

# (import name, distribution name, needed for) ; "core" pieces stop the course when missing.
_PACKAGES: list[tuple[str, str, str]] = [
    ("numpy", "numpy", "core"),
    ("tiktoken", "tiktoken", "core"),
    ("regex", "regex", "core"),
    ("tqdm", "tqdm", "core"),
    ("safetensors", "safetensors", "core"),
    ("matplotlib", "matplotlib", "course"),
    ("datasets", "datasets", "course"),
    ("transformers", "transformers", "course"),
    ("papermill", "papermill", "course"),
    ("jupyterlab", "jupyterlab", "course"),
    ("jupyter_book", "jupyter-book", "course"),
    ("pytest", "pytest", "dev"),
    ("nbval", "nbval", "dev"),
    ("ruff", "ruff", "dev"),
]

_FIX = {
    "core": "pip install -e .   (or: make test, which creates .venv and installs everything)",
    "course": "pip install -e '.[course]' -c constraints.txt",
    "dev": "pip install -e '.[dev]' -c constraints.txt",
}

MIN_TORCH = (2, 2)


@dataclass
class DoctorReport:
    """What :func:`doctor` found. ``ok`` is False when the course cannot run here."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gflops: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, name: str, value: object) -> None:
        self.lines.append((name, str(value)))

    def render(self) -> str:
        width = max((len(name) for name, _ in self.lines), default=0)
        out = ["minillm doctor", "=" * 14]
        out += [f"{name:<{width}}  {value}" for name, value in self.lines]
        for warning in self.warnings:
            out.append(f"WARNING  {warning}")
        for problem in self.problems:
            out.append(f"PROBLEM  {problem}")
        out.append("")
        out.append(
            "Result: ready for the course."
            if self.ok
            else f"Result: {len(self.problems)} problem(s); fix them with the commands above."
        )
        return "\n".join(out)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows.

    Speed figures differ between CPU models, so results and model cards record it.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> float | None:
    """The 1-minute load average (processes running or waiting for a core), None where the OS has
    none. A timing taken while it exceeds the core count measures the other jobs too."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def git_commit(folder: str | os.PathLike) -> str | None:
    """The commit a git checkout at ``folder`` is at, with ``+dirty`` when tracked files changed;
    None outside a checkout (an installed wheel) or without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


def machine_facts() -> dict[str, Any]:
    """What a stored measurement names: the CPU model, cores, torch threads, versions, and the
    load average now (call it again at the end to see whether other work ran meanwhile)."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "minillm": _version_of("minillm"),
        "load_average": load_average(),
    }


def measure_matmul_gflops(
    dtype: torch.dtype = torch.float32,
    size: int = 512,
    seconds: float = 0.25,
    device: torch.device | str = "cpu",
) -> float:
    """Measure dense matmul throughput in GFLOP/s (2·n³ FLOPs per n×n product).

    Runs repeated ``size``×``size`` products for about ``seconds`` and keeps the best of
    three rounds, which is the usual way to estimate a processor's achievable peak.
    """
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: first calls pay for allocation and kernel selection
        a @ b
    sync()
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            a @ b
            count += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        best = max(best, 2 * size**3 * count / elapsed / 1e9)
    return best


def _smoke_forward_backward(device: torch.device) -> float:
    """A two-layer network's forward and backward pass; returns the loss (must be finite)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Embedding(64, 32), torch.nn.Flatten(), torch.nn.Linear(32 * 8, 64)
    ).to(device)
    tokens = torch.randint(0, 64, (4, 8), device=device)
    targets = torch.randint(0, 64, (4,), device=device)
    loss = torch.nn.functional.cross_entropy(net(tokens), targets)
    loss.backward()
    grads_finite = all(torch.isfinite(p.grad).all() for p in net.parameters())
    if not grads_finite:
        raise RuntimeError("gradients are not finite")
    return loss.item()


def doctor(verbose: bool = True, measure: bool = True) -> DoctorReport:
    """Check that this machine can run the course, and print what was found.

    Reports the Python, PyTorch and key package versions, the device, the thread count,
    measured matmul GFLOP/s in float32 and bfloat16, and the result of a tiny
    forward/backward pass. Every missing piece comes with the command that fixes it.

    Args:
        verbose: print the report.
        measure: run the matmul timings (about a second); off for quick checks.

    Returns:
        A :class:`DoctorReport`; ``report.ok`` is False when the course cannot run.
    """
    report = DoctorReport()
    report.add("python", f"{platform.python_version()} ({sys.executable})")
    report.add("platform", f"{platform.system()} {platform.machine()}")
    report.add("cpu", cpu_name())

    torch_version = torch.__version__
    report.add("torch", torch_version)
    major_minor = tuple(int(part) for part in torch_version.split("+")[0].split(".")[:2])
    if major_minor < MIN_TORCH:
        report.problems.append(
            f"torch {torch_version} is too old (need >= {MIN_TORCH[0]}.{MIN_TORCH[1]}); "
            "fix: pip install torch==2.13.0"
        )

    for import_name, distribution, role in _PACKAGES:
        version = _version_of(distribution)
        if version is None:
            try:
                importlib.import_module(import_name)
                version = "installed"
            except ImportError:
                version = None
        report.add(distribution, version or "MISSING")
        if version is None:
            message = f"{distribution} is missing ({role}); fix: {_FIX[role]}"
            (report.problems if role in ("core", "course") else report.warnings).append(message)

    try:
        device = auto_device()
    except ValueError as err:
        report.problems.append(str(err))
        device = torch.device("cpu")
    report.add("device", device)
    if device.type == "cuda":
        report.add("gpu", torch.cuda.get_device_name(device))
    report.add("cpu threads", f"{torch.get_num_threads()} (os.cpu_count()={os.cpu_count()})")

    if measure:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            try:
                gflops = measure_matmul_gflops(dtype)
                report.gflops[name] = gflops
                report.add(f"cpu matmul {name}", f"{gflops:.1f} GFLOP/s")
            except RuntimeError as err:  # some CPUs lack bfloat16 matmul kernels
                report.warnings.append(f"{name} matmul failed on this CPU: {err}")

    try:
        loss = _smoke_forward_backward(device)
        report.add("forward/backward", f"ok on {device} (loss {loss:.3f})")
    except Exception as err:  # noqa: BLE001 - any failure here means the course cannot run
        report.problems.append(
            f"a tiny forward/backward pass failed on {device}: {err}; "
            f"try {DEVICE_ENV_VAR}=cpu, or reinstall with: pip install torch==2.13.0"
        )

    if verbose:
        print(report.render())
    return report
