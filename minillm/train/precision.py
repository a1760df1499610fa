"""Numeric formats for training: the formats themselves, autocast, loss scaling and their costs.

Taught in lesson 07 (mixed precision). :func:`minillm.train.train` uses :func:`autocast_context`
and :func:`make_grad_scaler` for its ``dtype`` setting.

- :data:`FORMATS`: the bit layout (sign, exponent, mantissa, bias) of fp32, fp16, bf16 and the
  two fp8 formats; :func:`format_table` adds their range and spacing from ``torch.finfo``.
- :func:`float_fields`: the sign, exponent and mantissa bits of every element of a tensor;
  :func:`spacing`: the gap from a number to the next one a format can represent.
- :func:`autocast_context` and :func:`make_grad_scaler`: the set-up for float32, bfloat16 and
  float16 on every device (float16 on a CPU works, slowly: few CPUs multiply it natively).
- :func:`autocast_dtypes`: the dtype of each stage of a training step under a given autocast.
- :func:`saved_activation_bytes` and :func:`train_tokens_per_s`: the memory an autocast keeps
  for backward and the training speed it reaches.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""The ``dtype`` names a training run accepts, and the torch dtype each one means."""


# ---------------------------------------------------------------------------------------------
# The formats
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatFormat:
    """The bit layout of a binary floating-point format: 1 sign bit, then exponent, then mantissa.

    A normal number is $(-1)^s \\cdot 2^{e - \\mathrm{bias}} \\cdot (1 + m / 2^p)$ with $p$ the
    mantissa bits and $\\mathrm{bias} = 2^{E-1} - 1$ for $E$ exponent bits.
    """

    name: str
    dtype: torch.dtype
    exponent_bits: int
    mantissa_bits: int

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("float32", torch.float32, 8, 23),
        FloatFormat("float16", torch.float16, 5, 10),
        FloatFormat("bfloat16", torch.bfloat16, 8, 7),
        FloatFormat("float8_e4m3fn", torch.float8_e4m3fn, 4, 3),
        FloatFormat("float8_e5m2", torch.float8_e5m2, 5, 2),
    )
}
"""The formats of lesson 07, by name (fp8 e4m3 is the ``fn`` variant: no infinity, max 448)."""


def get_format(dtype: torch.dtype | str) -> FloatFormat:
    """The :class:`FloatFormat` of a torch dtype or of its name ("bfloat16").

    Raises:
        ValueError: a dtype that is not one of :data:`FORMATS`.
    """
    for fmt in FORMATS.values():
        if dtype in (fmt.dtype, fmt.name):
            return fmt
    raise ValueError(f"no float format {dtype!r}; known formats: {', '.join(FORMATS)}")


def format_table() -> list[dict[str, Any]]:
    """One row per format: bit layout, and range and spacing read from ``torch.finfo``.

    Columns: ``bits``, ``exponent_bits``, ``mantissa_bits``, ``bias``, ``max``, ``smallest_normal``,
    ``smallest_subnormal`` ($2^{1 - \\mathrm{bias} - p}$), ``eps`` (the gap just above 1) and
    ``decimal_digits`` (about $\\log_{10} 2^{p+1}$).
    """
    rows = []
    for fmt in FORMATS.values():
        info = torch.finfo(fmt.dtype)
        rows.append(
            {
                "format": fmt.name,
                "bits": fmt.bits,
                "exponent_bits": fmt.exponent_bits,
                "mantissa_bits": fmt.mantissa_bits,
                "bias": fmt.bias,
                "max": float(info.max),
                "smallest_normal": float(info.smallest_normal),
                "smallest_subnormal": float(info.smallest_normal) * float(info.eps),
                "eps": float(info.eps),
                "decimal_digits": round((fmt.mantissa_bits + 1) * 0.30103, 1),
            }
        )
    return rows


_INT_VIEW = {32: torch.int32, 16: torch.int16, 8: torch.uint8}


def float_fields(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (sign, biased exponent, mantissa) bit fields of every element, as int64 tensors.

    Raises:
        TypeError: ``x`` is not a tensor in one of the :data:`FORMATS`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    fmt = get_format(x.dtype) if x.dtype.is_floating_point else None
    if fmt is None:
        raise TypeError(f"x must be a float tensor, got dtype {x.dtype}")
    raw = x.contiguous().view(_INT_VIEW[fmt.bits]).to(torch.int64) & ((1 << fmt.bits) - 1)
    mantissa = raw & ((1 << fmt.mantissa_bits) - 1)
    exponent = (raw >> fmt.mantissa_bits) & ((1 << fmt.exponent_bits) - 1)
    sign = raw >> (fmt.bits - 1)
    return sign, exponent, mantissa


def spacing(x: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """The gap between ``|x|`` and the next larger number of ``dtype`` (float64 result).

    Between $2^k$ and $2^{k+1}$ a format with $p$ mantissa bits has $2^p$ equally spaced numbers,
    so the gap is $2^{k-p}$; below the smallest normal number it stays at the subnormal step.
    ``x`` is read as it is (round it to ``dtype`` first to ask about a representable number).
    """
    fmt = get_format(dtype)
    info = torch.finfo(fmt.dtype)
    values = torch.as_tensor(x, dtype=torch.float64).abs()
    _, exponent = torch.frexp(values)  # values = f * 2**exponent with f in [0.5, 1)
    min_exponent = torch.frexp(torch.tensor(float(info.smallest_normal), dtype=torch.float64))[1]
    exponent = torch.maximum(exponent, min_exponent) - 1  # floor(log2 |x|), at least the normal min
    return torch.pow(2.0, (exponent - fmt.mantissa_bits).to(torch.float64))


# ---------------------------------------------------------------------------------------------
# Autocast and loss scaling
# ---------------------------------------------------------------------------------------------


def _check_dtype_name(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")


def autocast_context(dtype: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for ``dtype`` on ``device`` (a no-op for float32).

    float16 works on every device PyTorch autocasts (CUDA, CPU, MPS) and needs a loss scaler
    (:func:`make_grad_scaler`); on a CPU it is slow, since few CPUs multiply float16 natively:
    prefer bfloat16 there, and use float16 to study loss scaling.

    Raises:
        ValueError: an unknown dtype name.
    """
    _check_dtype_name(dtype)
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[dtype])


def make_grad_scaler(
    dtype: str, device: torch.device | str, *, init_scale: float = 2.0**16
) -> torch.amp.GradScaler:
    """The dynamic loss scaler a run in ``dtype`` needs: enabled for float16 only.

    float16 has 5 exponent bits: gradients below about $6 \\cdot 10^{-8}$ become zero. The scaler
    multiplies the loss by $S$ (``init_scale``, $2^{16}$) before backward and divides the
    gradients by $S$ before the optimizer step; a step whose gradients hold inf or NaN is skipped
    and $S$ halves, and after 2000 good steps in a row $S$ doubles. bfloat16 has float32's
    exponent range and needs none (the returned scaler is disabled: its calls pass through).

    Raises:
        ValueError: an unknown dtype name, or ``init_scale`` not > 0.
    """
    _check_dtype_name(dtype)
    if not init_scale > 0:
        raise ValueError(f"init_scale must be > 0, got {init_scale}")
    device_type = torch.device(device).type
    return torch.amp.GradScaler(device_type, init_scale=init_scale, enabled=dtype == "float16")


# ---------------------------------------------------------------------------------------------
# What autocast does to a training step, and what it costs
# ---------------------------------------------------------------------------------------------

AUTOCAST_STAGES = (
    "params",
    "Linear out",
    "LayerNorm out",
    "LayerNorm(low)",
    "softmax(low)",
    "logits",
    "loss",
    "grads",
)
"""The rows of :func:`autocast_dtypes`, in the order a training step meets them."""


def _first(model: nn.Module, kind: type) -> nn.Module:
    for module in model.modules():
        if isinstance(module, kind):
            return module
    raise ValueError(f"the model has no {kind.__name__} layer to probe")


def autocast_dtypes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    dtype: str,
    device: torch.device | str = "cpu",
) -> dict[str, torch.dtype]:
    """The dtype of each stage of one training step (forward, loss, backward) under ``dtype``.

    The first ``nn.Linear`` and ``nn.LayerNorm`` of the model are read with forward hooks (the
    LayerNorm's input is the float32 residual stream). "LayerNorm(low)" and "softmax(low)" apply
    ``F.layer_norm`` and ``F.softmax``, in the same autocast, to that Linear's output: what each
    does to a low-precision input (the attention's own softmax may be fused into one kernel).
    "grads" is the dtype of the parameters' gradients. The model's gradients are cleared before
    and after.

    Args:
        model: a model whose call ``model(x, y)`` returns ``(logits, loss)``.
        x, y: a batch of inputs and targets.
        dtype: "float32", "bfloat16" or "float16".
        device: the device whose autocast is used (the model and batch must be on it).
    """
    seen: dict[str, torch.dtype] = {}
    linear, norm = _first(model, nn.Linear), _first(model, nn.LayerNorm)

    def record(name: str):
        def hook(_module, _inputs, output):
            seen.setdefault(name, output.dtype)
            if name == "Linear out":
                width = output.shape[-1]
                seen.setdefault("LayerNorm(low)", F.layer_norm(output, (width,)).dtype)
                seen.setdefault("softmax(low)", F.softmax(output, dim=-1).dtype)

        return hook

    handles = [
        linear.register_forward_hook(record("Linear out")),
        norm.register_forward_hook(record("LayerNorm out")),
    ]
    model.zero_grad(set_to_none=True)
    try:
        with autocast_context(dtype, device):
            logits, loss = model(x, y)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    params = list(model.parameters())
    grads = {p.grad.dtype for p in params if p.grad is not None}
    model.zero_grad(set_to_none=True)
    seen.update(
        {
            "params": params[0].dtype,
            "logits": logits.dtype,
            "loss": loss.dtype,
            "grads": grads.pop() if len(grads) == 1 else None,
        }
    )
    return {stage: seen[stage] for stage in AUTOCAST_STAGES}


def saved_activation_bytes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: str, device: torch.device | str
) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward pass under ``dtype``.

    That is the activation memory of training (the part that grows with batch and context).
    The model's own parameters are left out (they are held anyway); the low-precision copies of
    the weights that autocast makes are counted, since they are kept too. Each storage counts once.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    keep = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    with keep, autocast_context(dtype, device):
        _, loss = model(x, y)
    del loss
    return sum(storages.values())


def train_tokens_per_s(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    dtype: str,
    *,
    steps: int = 5,
    warmup: int = 1,
    forward: nn.Module | None = None,
) -> float:
    """Training tokens per second of ``steps`` AdamW steps on one batch under ``dtype``.

    ``forward`` is the callable module to run (``torch.compile(model)``, say; default
    ``model``); the optimizer updates ``model``'s parameters. The first ``warmup`` steps (which
    pay for compilation and allocation) are not timed. Weights change: pass a copy to keep yours.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    forward = model if forward is None else forward
    device = x.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = make_grad_scaler(dtype, device)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if (
                device.type == "cuda"
            ):  # CUDA runs asynchronously: let the warm-up steps finish first
                torch.cuda.synchronize()
            started = time.perf_counter()
        with autocast_context(dtype, device):
            _, loss = forward(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return x.numel() * steps / (time.perf_counter() - started)
