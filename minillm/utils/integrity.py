"""One integrity scheme for every weights file minillm writes (checkpoints, quantized models).

A file's JSON header (the ``"minillm"`` metadata string of a safetensors file) records a SHA-256
of every tensor (its name, dtype, shape and bytes), the tokenizer's fingerprint, and a SHA-256 of
the header itself. :func:`write_sealed` adds those and writes the file atomically;
:func:`verify_sealed` checks them on load. A file written by this version always carries them, so
a file without them is refused unless the caller passes ``legacy=True`` explicitly (deleting the
checksum keys is not a way around the check). :func:`check_fingerprint` refuses a tokenizer other
than the recorded one; :func:`refuse_oversized` refuses a header that claims a far larger model
than the file holds, before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from minillm.utils.safefile import SafetensorsFormatError, read_header

__all__ = [
    "CHECKSUMS_KEY",
    "FINGERPRINT_KEY",
    "HEADER_CHECKSUM_KEY",
    "IntegrityError",
    "check_fingerprint",
    "header_digest",
    "read_sealed_header",
    "refuse_oversized",
    "seal",
    "tensor_digest",
    "verify_sealed",
    "write_sealed",
]

CHECKSUMS_KEY = "checksums"
HEADER_CHECKSUM_KEY = "header_sha256"
FINGERPRINT_KEY = "tokenizer_fingerprint"
METADATA_KEY = "minillm"
_NOTICED: set[str] = set()  # legacy files already reported in this process


class IntegrityError(ValueError):
    """A file's checksums, header digest or tokenizer fingerprint do not match."""


def tensor_digest(name: str, tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's name, dtype, shape and bytes (a flip in any of them changes it)."""
    digest = hashlib.sha256(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def header_digest(header: dict[str, Any]) -> str:
    """SHA-256 of the header's canonical JSON, its own checksum left out.

    Canonical (sorted keys, no spaces), so what is verified is the parsed content: a flip that
    changes no value (JSON whitespace) is harmless, any other is caught.
    """
    content = {k: v for k, v in header.items() if k != HEADER_CHECKSUM_KEY}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def seal(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A copy of ``header`` with every tensor's checksum and the header's own digest added."""
    header = {k: v for k, v in header.items() if k != HEADER_CHECKSUM_KEY}
    header[CHECKSUMS_KEY] = {name: tensor_digest(name, t) for name, t in tensors.items()}
    header.setdefault(FINGERPRINT_KEY, None)
    header[HEADER_CHECKSUM_KEY] = header_digest(header)
    return header


def write_sealed(
    path: str | Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]
) -> Path:
    """Seal ``header`` (:func:`seal`) and write a safetensors file atomically.

    The temporary file is named ``.<name>.<pid>.tmp`` in the target's folder, so a killed
    writer's leftover is recognised and removed later (:func:`minillm.utils.outputs.clean_stale_temporaries`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    sealed = seal(header, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(sealed)})
        os.replace(tmp, path)
    except OSError as err:  # name the file the user asked for, never the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def verify_sealed(
    path: str | Path,
    header: dict[str, Any],
    tensors: dict[str, torch.Tensor] | None = None,
    *,
    legacy: bool = False,
    error: type[ValueError] = IntegrityError,
    what: str = "file",
) -> bool:
    """Check the header digest and (when given) every tensor's checksum and finiteness.

    Returns True when the checksums were verified, False only for a legacy file read with
    ``legacy=True`` (a notice goes to stderr once per file).

    Raises:
        ``error``: no checksums (and not ``legacy``), a digest mismatch, a missing or extra
            tensor, or a floating tensor holding NaN or infinity.
    """
    checksums = header.get(CHECKSUMS_KEY)
    if checksums is None or HEADER_CHECKSUM_KEY not in header:
        if not legacy:
            raise error(
                f"{path}: this {what} has no checksums, so its integrity cannot be verified "
                "(a file written by this minillm always has them: it was edited or is from an "
                "older version); refusing it. To load a trusted older file, pass legacy=True "
                "and re-save it."
            )
        _notice(Path(path), what)
    elif header.get(HEADER_CHECKSUM_KEY) != header_digest(header):
        raise error(
            f"{path}: corrupt: the header's checksum does not match its content; the {what} was "
            "damaged or edited after it was written. Use another file or write it again."
        )
    if tensors is None:
        return checksums is not None
    if checksums is not None:
        if not isinstance(checksums, dict):
            raise error(f"{path}: corrupt: the checksum table is malformed")
        for name in sorted(set(tensors) | set(checksums)):
            if name not in checksums:
                raise error(f"{path}: corrupt: tensor {name} has no recorded checksum")
            if name not in tensors:
                raise error(f"{path}: corrupt: tensor {name} is missing from the file")
            if tensor_digest(name, tensors[name]) != checksums[name]:
                raise error(
                    f"{path}: corrupt: tensor {name} differs from what was saved (checksum "
                    f"mismatch); use another {what} or write it again"
                )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise error(
                f"{path}: tensor {name} holds NaN or infinite values; a model cannot run from "
                f"it. Use another {what} or write it again."
            )
    return checksums is not None


def _notice(path: Path, what: str) -> None:
    key = str(path.resolve())
    if key not in _NOTICED:
        _NOTICED.add(key)
        print(
            f"notice: {path} has no checksums (an older minillm {what}); loaded without "
            "verification because legacy=True was given; re-save it to add them",
            file=sys.stderr,
        )


def check_fingerprint(
    expected: str | None,
    tokenizer: Any,
    path: str | Path,
    source: str | Path = "",
    *,
    error: type[ValueError] = IntegrityError,
) -> None:
    """Refuse a tokenizer whose fingerprint differs from the one ``path`` records.

    Files with no recorded fingerprint (runs given raw token arrays) are not checked.
    """
    if expected is None:
        return
    actual = tokenizer.fingerprint()
    if actual != expected:
        where = f" {source}" if source else ""
        raise error(
            f"the tokenizer{where} (fingerprint {actual[:12]}) is not the one {path} "
            f"was trained with (fingerprint {expected[:12]}): its ids would mean other text. "
            "Pass the run's own tokenizer.bpe (--tokenizer PATH)."
        )


def refuse_oversized(
    path: str | Path, claimed: int, held: int, *, error: type[ValueError] = IntegrityError
) -> None:
    """Refuse a header whose model needs far more parameters than the file holds (at once)."""
    if claimed > 2 * held:
        raise error(
            f"{path}: the header's model configuration needs at least {claimed:,} "
            f"parameters, but the file holds {held:,} (corrupt or edited header); nothing "
            "was allocated"
        )


def read_sealed_header(path: str | Path, *, error: type[ValueError] = IntegrityError) -> dict:
    """The ``"minillm"`` JSON header of a safetensors file, without reading any tensor."""
    try:
        _, metadata, _ = read_header(path)
        header = json.loads(metadata[METADATA_KEY])
    except (SafetensorsFormatError, KeyError, json.JSONDecodeError) as err:
        raise error(f"{path}: not a minillm file (no valid 'minillm' header): {err}") from err
    if not isinstance(header, dict):
        raise error(f"{path}: not a minillm file (its 'minillm' header is not an object)")
    return header
