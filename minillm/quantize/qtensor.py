"""Quantized tensors: codes, packing, scales and zero points, the rounding rules (lesson 10).

A weight matrix ``W`` (out x in) is cut into groups along its input dimension (one group per
tensor, per row, or every ``group_size`` columns). Each group gets a scale ``s`` (stored as fp16
by default) and, for asymmetric schemes, an integer zero point ``z``; each weight becomes an
unsigned ``bits``-wide code ``c`` with ``W ~ (c - z) * s``. Codes are packed ``8 / bits`` to a
byte (two int4 codes per byte), so the stored bytes are what a real engine would keep.

Schemes (``scheme=``):

- ``"absmax"``: symmetric, ``s = max|w| / (2^(bits-1) - 1)``, ``z = 2^(bits-1)``.
- ``"minmax"``: asymmetric, ``s = (max - min) / (2^bits - 1)`` over a range that contains 0,
  ``z = round(-min / s)`` stored per group.
- ``"q8_0"`` and ``"q4_0"``: llama.cpp's rules (blocks of 32, round-half-away for Q8_0, the
  signed-max rule for Q4_0); :mod:`minillm.quantize.gguf` writes them as GGUF blocks byte for byte.

:mod:`minillm.quantize` puts these tensors into a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SCHEMES = ("absmax", "minmax", "q8_0", "q4_0")
GGML_BLOCK = 32  # llama.cpp's Q8_0 / Q4_0 block size


# ---------------------------------------------------------------------------------------------
# Packing: codes of `bits` bits, LSB first, into bytes
# ---------------------------------------------------------------------------------------------


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int from 2 to 8, got {bits!r}")
    return bits


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ``bits``-wide codes along the last dimension into bytes, LSB first.

    For 4 bits, byte ``j`` holds code ``2j`` in its low nibble and ``2j + 1`` in its high one.

    Args:
        codes: integer tensor (..., n) with values in ``[0, 2^bits)``; ``n * bits`` must be a
            multiple of 8.
        bits: code width, 2..8.

    Returns:
        uint8 tensor (..., n * bits / 8).
    """
    _check_bits(bits)
    n = codes.shape[-1]
    if (n * bits) % 8:
        raise ValueError(f"{n} codes of {bits} bits do not fill whole bytes; pad to a multiple")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return codes.to(torch.uint8)
    if bits == 4:  # the common case: code 2j in the low nibble, 2j + 1 in the high one
        pairs = codes.to(torch.uint8).reshape(*codes.shape[:-1], n // 2, 2)
        return pairs[..., 0] | (pairs[..., 1] << 4)
    shifts = torch.arange(bits, dtype=torch.int32)
    bit_planes = (codes.to(torch.int32).unsqueeze(-1) >> shifts) & 1  # (..., n, bits)
    bit_planes = bit_planes.reshape(*codes.shape[:-1], n * bits // 8, 8)
    weights = 1 << torch.arange(8, dtype=torch.int32)
    return (bit_planes * weights).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 (..., n * bits / 8) -> uint8 codes (..., n)."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {packed.dtype}")
    if packed.shape[-1] * 8 != n * bits:
        raise ValueError(f"{packed.shape[-1]} bytes cannot hold {n} codes of {bits} bits")
    if bits == 8:
        return packed
    if bits == 4:  # the common case, without the bit-plane detour
        low, high = packed & 0x0F, packed >> 4
        return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], n)
    planes = (packed.to(torch.int32).unsqueeze(-1) >> torch.arange(8, dtype=torch.int32)) & 1
    planes = planes.reshape(*packed.shape[:-1], n, bits)
    return (planes << torch.arange(bits, dtype=torch.int32)).sum(-1).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# One quantized weight matrix
# ---------------------------------------------------------------------------------------------


@dataclass
class QuantizedWeight:
    """A (out x in) weight stored as packed codes, per-group scales and optional zero points.

    Attributes:
        packed: uint8 (out, padded_in * bits / 8).
        scale: (out or 1, groups) in ``scale_dtype``; may be negative for Q4_0.
        zero: uint8 zero points shaped like ``scale`` (asymmetric schemes), else None, and then
            the zero point is the constant ``2^(bits-1)``.
        bits: code width.
        shape: the original (out, in).
        group_size: columns per group (the padded width for per-row or per-tensor scales).
        scheme: one of :data:`SCHEMES`.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    bits: int
    shape: tuple[int, int]
    group_size: int
    scheme: str

    @property
    def padded_in(self) -> int:
        return self.packed.shape[1] * 8 // self.bits

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors: codes, scales and zero points."""
        tensors = [self.packed, self.scale] + ([self.zero] if self.zero is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def codes(self) -> torch.Tensor:
        """The unpacked unsigned codes, uint8 (out, padded_in)."""
        return unpack_codes(self.packed, self.bits, self.padded_in)

    def zero_points(self) -> torch.Tensor:
        if self.zero is not None:
            return self.zero.float()
        return torch.full((1, 1), float(1 << (self.bits - 1)))

    def dequantize(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The float32 weight ``(c - z) * s``, shape (out, in), or only the given rows."""
        packed, scale, zero = self.packed, self.scale.float(), self.zero_points()
        if rows is not None:
            packed = packed[rows]
            scale = scale[rows] if scale.shape[0] > 1 else scale
            zero = zero[rows] if zero.shape[0] > 1 else zero
        codes = unpack_codes(packed, self.bits, self.padded_in).float()
        groups = codes.reshape(*codes.shape[:-1], -1, self.group_size)  # (..., G, group_size)
        w = (groups - zero.unsqueeze(-1)) * scale.unsqueeze(-1)
        return w.reshape(*codes.shape[:-1], self.padded_in)[..., : self.shape[1]]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"packed": self.packed, "scale": self.scale}
        if self.zero is not None:
            out["zero"] = self.zero
        return out

    def spec(self) -> dict[str, Any]:
        """Everything but the tensors (JSON-serialisable), to rebuild the layout on load."""
        return {
            "bits": self.bits,
            "shape": list(self.shape),
            "group_size": self.group_size,
            "scheme": self.scheme,
            "groups": self.scale.shape[1],
            "scale_rows": self.scale.shape[0],
            "scale_dtype": str(self.scale.dtype).removeprefix("torch."),
            "padded_in": self.padded_in,
            "zero": self.zero is not None,
        }

    @classmethod
    def empty(cls, spec: Mapping[str, Any]) -> QuantizedWeight:
        """Zero tensors laid out as ``spec`` says (filled by ``load_state_dict``)."""
        out, _ = spec["shape"]
        scale_shape = (spec["scale_rows"], spec["groups"])
        return cls(
            packed=torch.zeros(out, spec["padded_in"] * spec["bits"] // 8, dtype=torch.uint8),
            scale=torch.zeros(scale_shape, dtype=getattr(torch, spec["scale_dtype"])),
            zero=torch.zeros(scale_shape, dtype=torch.uint8) if spec["zero"] else None,
            bits=spec["bits"],
            shape=tuple(spec["shape"]),
            group_size=spec["group_size"],
            scheme=spec["scheme"],
        )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _layout(
    cols: int, bits: int, group_size: int | None, per_tensor: bool, pad: bool
) -> tuple[int, int]:
    """(padded width, columns per group), or a ValueError that says what would work."""
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1
    ):
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    if per_tensor and group_size is not None:
        raise ValueError("per_tensor=True takes one scale for the matrix; leave group_size None")
    step = group_size or 1
    while (step * bits) % 8:  # a group must fill whole bytes when groups are padded
        step *= 2
    padded = math.ceil(cols / step) * step if group_size else cols
    if group_size is None and (cols * bits) % 8:
        padded = math.ceil(cols * bits / 8) * 8 // bits
    if padded != cols and not pad:
        what = (
            f"group_size {group_size} does not divide the input width {cols}"
            if group_size and cols % group_size
            else f"{cols} columns of {bits} bits do not fill whole bytes"
        )
        divisors = [d for d in _divisors(cols) if d >= 8 and (d * bits) % 8 == 0]
        raise ValueError(
            f"{what}; choose a group size that divides {cols} ({divisors}) or pass pad=True "
            f"to pad each row with zeros to {padded} columns"
        )
    return padded, (group_size or padded)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero exactly as gguf-py's ``np_roundf`` (C's ``roundf``)."""
    a = x.abs()
    floored = torch.floor(a)
    return torch.sign(x) * (floored + torch.floor(2 * (a - floored)))


def quantize_weight(
    weight: torch.Tensor,
    bits: int = 8,
    *,
    group_size: int | None = None,
    per_tensor: bool = False,
    scheme: str = "absmax",
    qmax: float | None = None,
    scale_dtype: torch.dtype = torch.float16,
    pad: bool = False,
) -> QuantizedWeight:
    """Quantize a 2-D weight (out x in) to packed ``bits``-bit codes.

    Args:
        weight: float tensor (out, in).
        bits: code width, 2..8 (``q8_0`` needs 8, ``q4_0`` needs 4).
        group_size: columns sharing a scale; None means one scale per row (per channel).
        per_tensor: one scale for the whole matrix.
        scheme: ``"absmax"``, ``"minmax"``, ``"q8_0"`` or ``"q4_0"`` (see the module docstring).
        qmax: for ``absmax``, the code the largest ``|w|`` maps to (default ``2^(bits-1) - 1``;
            torchao uses 127.5, half of the 255 steps from -128 to 127).
        scale_dtype: ``torch.float16`` (what engines store) or ``torch.float32``.
        pad: pad rows with zeros to a whole number of groups instead of raising.

    Raises:
        ValueError: a group size that does not divide the width (without ``pad``), an unknown
            scheme, or bits outside 2..8.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError(f"weight must be a 2-D tensor, got {type(weight).__name__}")
    _check_bits(bits)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
    if scale_dtype not in (torch.float16, torch.float32):
        raise ValueError(f"scale_dtype must be torch.float16 or torch.float32, got {scale_dtype}")
    if scheme in ("q8_0", "q4_0"):
        need = 8 if scheme == "q8_0" else 4
        if bits != need or group_size not in (None, GGML_BLOCK) or per_tensor:
            raise ValueError(f"{scheme} means {need} bits in blocks of {GGML_BLOCK} columns")
        group_size = GGML_BLOCK
    rows, cols = weight.shape
    padded, gs = _layout(cols, bits, group_size, per_tensor, pad)
    w = F.pad(weight.detach().float(), (0, padded - cols))
    groups = w.reshape(1, 1, -1) if per_tensor else w.reshape(rows, padded // gs, gs)
    scale, zero, codes = _SCHEME_FUNCS[scheme](groups, bits, qmax, scale_dtype)
    codes = codes.reshape(rows, padded).to(torch.uint8)
    return QuantizedWeight(
        packed=pack_codes(codes, bits),
        scale=scale.to(scale_dtype),
        zero=zero,
        bits=bits,
        shape=(rows, cols),
        group_size=gs,
        scheme=scheme,
    )


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def _absmax(g: torch.Tensor, bits: int, qmax: float | None, scale_dtype: torch.dtype):
    half = 1 << (bits - 1)
    qmax = float(half - 1) if qmax is None else float(qmax)
    scale = (g.abs().amax(-1) / qmax).to(scale_dtype).float()  # codes use the stored scale
    q = torch.round(g * (1.0 / _safe(scale)).unsqueeze(-1)).clamp(-half, half - 1)
    return scale, None, q + half


def _minmax(g: torch.Tensor, bits: int, qmax: float | None, scale_dtype: torch.dtype):
    top = (1 << bits) - 1
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)  # the range contains 0
    scale = _safe(((hi - lo) / top).to(scale_dtype).float())
    zero = torch.round(-lo / scale).clamp(0, top)
    q = (torch.round(g * (1.0 / scale).unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(0, top)
    return scale, zero.to(torch.uint8), q


def _q8_0(g: torch.Tensor, bits: int, qmax: float | None, scale_dtype: torch.dtype):
    d = g.abs().amax(-1) / 127  # ggml: fp32 scale for the codes, stored as fp16
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = _round_half_away(g * inv.unsqueeze(-1))
    return d, None, q + 128


def q4_0_rule(groups: torch.Tensor, fma: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's Q4_0 rule on groups (..., 32): returns (scale ``d``, codes 0..15).

    The weight of largest magnitude, with its sign, maps exactly to code 0 (value -8·d):
    ``d = max / -8`` and ``c = trunc(w / d + 8.5)``. ggml's C code writes ``x*id + 8.5f``; a
    compiler may fuse that into one fused multiply-add (one rounding instead of two), which
    moves a code by one when ``w / d + 8.5`` lands within a rounding error of an integer.
    ``fma=True`` emulates the fused version (exact product and sum in float64, one rounding to
    float32); the default rounds twice, as gguf-py does.
    """
    signed_max = torch.gather(groups, -1, groups.abs().argmax(-1, keepdim=True)).squeeze(-1)
    d = signed_max / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d).unsqueeze(-1)
    # Unfused: the product is rounded to float32, then the sum is rounded again.
    biased = groups * inv + 8.5
    if fma:  # one rounding: exact in float64 (a float32 product fits), then to float32
        biased = (groups.double() * inv.double() + 8.5).float()
    return d, torch.trunc(biased).clamp(0, 15)


def _q4_0(g: torch.Tensor, bits: int, qmax: float | None, scale_dtype: torch.dtype):
    d, codes = q4_0_rule(g)
    return d, None, codes


_SCHEME_FUNCS = {"absmax": _absmax, "minmax": _minmax, "q8_0": _q8_0, "q4_0": _q4_0}
