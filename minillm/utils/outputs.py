"""Where commands write: one guard for targets, one lock per run folder, stale temporaries.

:func:`check_output` refuses an existing target unless overwriting was asked for, and always
refuses a target that is (or contains) one of the command's own inputs, so no command can
destroy what it reads. :class:`RunLock` holds an OS file lock (``fcntl.flock``) on a run folder
for as long as a run writes into it: a second writer is refused at once, and the OS releases the
lock when the process ends, even by ``kill -9``. :func:`clean_stale_temporaries` removes the
``.<name>.<pid>.tmp`` files that killed writers left behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

__all__ = [
    "LOCK_NAME",
    "RunFolderBusyError",
    "RunLock",
    "check_output",
    "clean_stale_temporaries",
    "pid_alive",
]

LOCK_NAME = ".minillm.lock"


class RunFolderBusyError(ValueError):
    """Another live process holds the run folder's lock."""


def _same_or_inside(target: Path, source: Path) -> bool:
    """Whether ``source`` is ``target`` itself or lies inside the folder ``target``."""
    t, s = target.resolve(), source.resolve()
    if t == s or t in s.parents:
        return True
    try:
        return target.exists() and source.exists() and os.path.samefile(target, source)
    except OSError:
        return False


def check_output(
    target: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
    what: str = "--out",
) -> Path:
    """Refuse to write ``target`` where that would lose something; return it as a Path.

    An existing file, or a non-empty folder, is refused unless ``overwrite``. A target that is
    one of ``inputs`` (or a folder holding one) is refused even with ``overwrite``: writing it
    would destroy the file being read.

    Raises:
        ValueError: the target is one of the inputs.
        FileExistsError: the target exists and ``overwrite`` is False.
    """
    target = Path(target)
    for source in inputs:
        if source is not None and _same_or_inside(target, Path(source)):
            raise ValueError(
                f"{what} {target} is (or holds) the input {source}: writing it would destroy "
                "the file being read, so it is refused even with --overwrite; choose another path"
            )
    if overwrite or not target.exists():
        return target
    if target.is_dir() and not any(target.iterdir()):
        return target
    raise FileExistsError(
        f"{what} {target} already exists; pass --overwrite to replace it, or choose another path"
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(
    folder: str | os.PathLike[str], *, min_age_s: float = 3600.0
) -> list[Path]:
    """Remove ``.<name>.<pid>.tmp`` leftovers whose writing process no longer exists.

    A temporary without a process id in its name is removed only when older than
    ``min_age_s`` (it may belong to a live writer). Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for path in folder.glob(".*.tmp"):
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit():
            if int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
        else:
            try:
                if now - path.lstat().st_mtime < min_age_s:
                    continue
            except OSError:
                continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class RunLock:
    """An exclusive lock on a run folder, held while a run writes into it.

    Use as a context manager. Entering creates the folder, takes ``fcntl.flock`` on
    ``<folder>/.minillm.lock`` without waiting, records this process id in it, and removes the
    stale temporaries of dead writers; leaving removes the lock file and releases the lock. The OS drops the lock when the
    process dies, so a killed run never leaves the folder locked.

    Raises:
        RunFolderBusyError: another live process holds the lock.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl  # POSIX only; imported here so the module loads everywhere

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderBusyError(
                    f"another minillm run (pid {owner}) is writing into {self.folder}; wait for "
                    "it to finish, or choose another output folder"
                ) from None
            # the holder removes the file when it leaves: a lock taken on a removed file is no
            # lock, so check that the path still names the file we locked, else take the new one
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        clean_stale_temporaries(self.folder)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            # remove the lock file while still holding it (the folder is left as the run made
            # it), then close the descriptor, which releases the flock
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
