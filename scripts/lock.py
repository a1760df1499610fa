"""Rewrite constraints.txt from the packages installed in the current environment.

torch is pinned without its local build tag (``+cpu``) so that the same file works on machines
whose wheel is the CUDA or macOS build of the same version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEADER = """\
# Exact versions of every package that 'make book' and 'make test' install (pip constraints).
# torch is the CPU build on machines that have its wheel locally; never install torch unpinned.
# Regenerate after changing pyproject.toml: make lock
"""


def main() -> int:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pins = []
    for line in frozen:
        name = line.split("==")[0].lower()
        if name == "minillm" or line.startswith("-e"):
            continue
        pins.append(line.split("+")[0] if name == "torch" else line)
    path = Path(__file__).resolve().parent.parent / "constraints.txt"
    path.write_text(HEADER + "\n".join(pins) + "\n")
    print(f"wrote {len(pins)} pins to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
