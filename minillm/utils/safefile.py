"""The safetensors format read and written from scratch, checked strictly (lesson 12).

A ``.safetensors`` file is three parts::

    [8 bytes: N, little-endian unsigned]  [N bytes: JSON header]  [data: raw tensor bytes]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``, with
offsets counted from the start of the data part, plus an optional ``"__metadata__"`` dict of
strings. Nothing in the file is code: reading it cannot run anything, unlike a pickle
(``torch.load`` without ``weights_only=True``).

:func:`read_header` parses the header; :func:`check_file` also proves that the tensors tile the
data part exactly: every tensor's byte length is ``prod(shape) * itemsize``, no two tensors
overlap, there is no gap, and no byte follows the last tensor. Truncated files, overlapping
offsets and trailing bytes raise :class:`SafetensorsFormatError` with a message naming the
problem. :func:`load_file` reads tensors after that check; :func:`save_file` writes a file (tied
tensors, which share storage, are written once: :func:`dedup_tied`); :func:`write_manifest` and
:func:`verify_manifest` keep a ``SHA256SUMS`` file for a release folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DTYPES",
    "MANIFEST_NAME",
    "SafetensorsFormatError",
    "TensorInfo",
    "check_file",
    "dedup_tied",
    "encode_file",
    "load_file",
    "read_header",
    "save_file",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]

MAX_HEADER_BYTES = 100_000_000
"""Header size above which a file is refused (the reference implementation's limit)."""
MANIFEST_NAME = "SHA256SUMS"

# safetensors dtype name -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_NAME_OF = {dtype: name for name, (dtype, _) in DTYPES.items()}


class SafetensorsFormatError(ValueError):
    """A file is not a well-formed safetensors file (the message says what is wrong)."""


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: where a tensor's bytes are, relative to the start of the data part."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Parse a safetensors header without reading the tensors.

    Returns:
        ``(tensors, metadata, data_start)``: the entries by name (in file order of their
        offsets), the ``__metadata__`` strings, and the byte position where the data part starts.

    Raises:
        SafetensorsFormatError: the file is shorter than its header claims, the header is not
            JSON, or an entry is malformed.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsFormatError(
                f"{path.name}: {size} bytes, too short for the 8-byte header length"
            )
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsFormatError(
                f"{path.name}: header length {n} exceeds {MAX_HEADER_BYTES} bytes"
            )
        if 8 + n > size:
            raise SafetensorsFormatError(
                f"{path.name}: truncated: the header claims {n} bytes but only {size - 8} follow"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SafetensorsFormatError(f"{path.name}: the header is not UTF-8 JSON ({err})") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError(
            f"{path.name}: the header is a {type(header).__name__}, not an object"
        )
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsFormatError(f"{path.name}: __metadata__ must map strings to strings")
    tensors = [_entry(path.name, name, value) for name, value in header.items()]
    tensors.sort(key=lambda t: (t.begin, t.end))
    return {t.name: t for t in tensors}, metadata, 8 + n


def _entry(file: str, name: str, value: Any) -> TensorInfo:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsFormatError(
            f"{file}: entry {name!r} must have exactly dtype, shape and data_offsets, got {value!r}"
        )
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPES:
        raise SafetensorsFormatError(
            f"{file}: {name!r} has dtype {dtype!r}; known: {sorted(DTYPES)}"
        )
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsFormatError(f"{file}: {name!r} has shape {shape!r}, not a list of sizes")
    ok = (
        isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    )
    if not ok or not 0 <= offsets[0] <= offsets[1]:
        raise SafetensorsFormatError(
            f"{file}: {name!r} has data_offsets {offsets!r}, not [begin, end]"
        )
    info = TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])
    want = math.prod(info.shape) * DTYPES[dtype][1]
    if info.nbytes != want:
        raise SafetensorsFormatError(
            f"{file}: {name!r} is {dtype} {list(shape)}, which needs {want} bytes, "
            f"but its data_offsets span {info.nbytes}"
        )
    return info


def check_file(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """:func:`read_header`, then prove the tensors tile the data part with no overlap, gap or tail.

    Raises:
        SafetensorsFormatError: truncated data, overlapping offsets, a gap, or trailing bytes.
    """
    path = Path(path)
    tensors, metadata, start = read_header(path)
    data_size = path.stat().st_size - start
    position, previous = 0, None
    for info in tensors.values():
        if info.begin < position:
            raise SafetensorsFormatError(
                f"{path.name}: overlapping offsets: {info.name!r} starts at byte {info.begin}, "
                f"inside {previous!r}, which ends at {position}"
            )
        if info.begin > position:
            raise SafetensorsFormatError(
                f"{path.name}: a gap of {info.begin - position} bytes before {info.name!r}"
            )
        position, previous = info.end, info.name
    if position > data_size:
        raise SafetensorsFormatError(
            f"{path.name}: truncated: the tensors need {position} data bytes, the file has {data_size}"
        )
    if position < data_size:
        raise SafetensorsFormatError(
            f"{path.name}: {data_size - position} trailing bytes after the last tensor"
        )
    return tensors, metadata, start


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checked file (:func:`check_file`), on the CPU."""
    path = Path(path)
    tensors, _, start = check_file(path)
    data = path.read_bytes()[start:]
    out = {}
    for info in tensors.values():
        dtype = DTYPES[info.dtype][0]
        chunk = bytearray(data[info.begin : info.end])  # writable copy: the tensor owns it
        flat = torch.frombuffer(chunk, dtype=dtype) if chunk else torch.empty(0, dtype=dtype)
        out[info.name] = flat.reshape(info.shape)
    return out


def dedup_tied(
    tensors: dict[str, torch.Tensor], prefer: tuple[str, ...] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep one name for tensors that share memory (tied weights, such as ``lm_head.weight``).

    Returns:
        ``(unique, aliases)``: the tensors to write (a name in ``prefer`` is kept, else the
        first in sorted order) and a map from each dropped name to the name it is stored under.

    Raises:
        ValueError: two tensors overlap in memory without being the same view (the file could
            not represent that).
    """
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    order = [n for n in prefer if n in tensors] + sorted(set(tensors) - set(prefer))
    for name in order:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(t).__name__}, not a tensor")
        if t.numel() == 0:
            unique[name] = t
            continue
        key = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            tuple(t.stride()),
            t.dtype,
        )
        if key in seen:
            aliases[name] = seen[key]
            continue
        storage = t.untyped_storage().data_ptr()
        for other_key, other in seen.items():
            if other_key[0] == storage:
                raise ValueError(
                    f"{name!r} and {other!r} share memory but are different views; "
                    "clone one of them before saving"
                )
        seen[key] = name
        unique[name] = t
    return unique, aliases


def encode_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (sorted by name, 8-byte aligned header).

    Raises:
        ValueError: a tensor shares memory with another one (call :func:`dedup_tied` first), or
            a dtype the format cannot store.
    """
    unique, aliases = dedup_tied(tensors)
    if aliases:
        raise ValueError(
            f"tensors share memory: {aliases} (dropped name -> kept name); call dedup_tied first"
        )
    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(unique):
        t = unique[name].detach().to("cpu").contiguous()
        if t.dtype not in _NAME_OF:
            raise ValueError(f"{name!r} has dtype {t.dtype}; storable: {sorted(_NAME_OF, key=str)}")
        blob = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _NAME_OF[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # pad with spaces so the data part starts 8-aligned
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def save_file(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> dict[str, str]:
    """Write ``tensors`` atomically, tied tensors once; return the aliases that were dropped."""
    unique, aliases = dedup_tied(tensors)
    data = encode_file(unique, metadata)
    _atomic_write(Path(path), data)
    return aliases


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks: any size fits in memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Write ``SHA256SUMS`` (``sha256sum`` format) for every file in ``folder`` (recursively)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in files]
    path = folder / MANIFEST_NAME
    _atomic_write(path, "".join(lines).encode("utf-8"))
    return path


def verify_manifest(folder: str | Path) -> list[str]:
    """Check every file against ``SHA256SUMS``; return the problems (empty when all match).

    Raises:
        FileNotFoundError: the folder has no manifest.
    """
    folder = Path(folder)
    problems = []
    listed = set()
    for line in (folder / MANIFEST_NAME).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed.add(name)
        target = folder / name
        if not target.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(target) != digest:
            problems.append(f"{name}: SHA-256 differs from the manifest")
    for p in sorted(folder.rglob("*")):
        name = p.relative_to(folder).as_posix()
        if p.is_file() and p.name != MANIFEST_NAME and name not in listed:
            problems.append(f"{name}: not in the manifest")
    return problems
