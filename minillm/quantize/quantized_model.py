"""Weight-only quantization of a GPT: quantized layers, sizes, files, what it costs (lesson 10).

:func:`quantize_model` swaps every ``nn.Linear`` of a model (and, as a switch, the tied token
embedding / output matrix) for :class:`QuantLinear` / :class:`QuantEmbedding`, which hold packed
low-bit codes (:mod:`minillm.quantize.qtensor`) and dequantize on the fly, or call PyTorch's CPU low-bit
kernels. :func:`save_quantized` / :func:`load_quantized` keep them in a safetensors file;
:func:`model_size_bytes` counts bytes; :func:`logit_agreement` measures KL divergence and top-1
agreement with the float model. ``minillm quantize`` is the command line.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.model.config import GPTConfig
from minillm.model.gpt import GPT
from minillm.quantize.qtensor import (
    GGML_BLOCK,
    SCHEMES,
    QuantizedWeight,
    pack_codes,
    q4_0_rule,
    quantize_weight,
    unpack_codes,
)
from minillm.train.checkpoint import _parameters_at_least
from minillm.utils.integrity import (
    FINGERPRINT_KEY,
    check_fingerprint,
    read_sealed_header,
    refuse_oversized,
    verify_sealed,
    write_sealed,
)
from minillm.utils.safefile import SafetensorsFormatError, read_header

__all__ = [
    "GGML_BLOCK",
    "SCHEMES",
    "Agreement",
    "QuantEmbedding",
    "QuantLinear",
    "QuantizedWeight",
    "dequantize",
    "is_quantized_file",
    "linear_names",
    "load_quantized",
    "logit_agreement",
    "model_size_bytes",
    "pack_codes",
    "q4_0_rule",
    "check_quantized_tokenizer",
    "quantized_fingerprint",
    "quantize_model",
    "quantize_weight",
    "save_quantized",
    "unpack_codes",
]

BACKENDS = ("dequantize", "kernel", "kernel-bf16")
FORMAT = "minillm.quantized"
FORMAT_VERSION = 1
_INT4_KERNEL_GROUPS = (32, 64, 128, 256)  # group sizes torch._weight_int4pack_mm_for_cpu takes


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class _QuantStore(nn.Module):
    """Holds a :class:`QuantizedWeight`'s tensors as buffers (so they move and save)."""

    def __init__(self, qweight: QuantizedWeight) -> None:
        super().__init__()
        self.spec = qweight.spec()
        for name, tensor in qweight.tensors().items():
            self.register_buffer(name, tensor)
        self._kernel_cache: tuple[Any, ...] | None = None

    @property
    def qweight(self) -> QuantizedWeight:
        return QuantizedWeight(
            packed=self.packed,
            scale=self.scale,
            zero=getattr(self, "zero", None),
            bits=self.spec["bits"],
            shape=tuple(self.spec["shape"]),
            group_size=self.spec["group_size"],
            scheme=self.spec["scheme"],
        )

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._kernel_cache = None  # new bytes: repack for the kernels on next use
        super()._load_from_state_dict(*args, **kwargs)


class QuantLinear(_QuantStore):
    """``nn.Linear`` with a quantized weight: ``y = x Wᵀ + b`` with ``W = (c - z) s``.

    ``backend="dequantize"`` rebuilds the float weight on every call (plain PyTorch, any
    layout). ``backend="kernel"`` uses PyTorch's CPU low-bit matmuls where the layout allows:
    ``torch._weight_int8pack_mm`` for symmetric per-channel int8, and
    ``torch._weight_int4pack_mm_for_cpu`` for int4 groups of 32/64/128/256; other layouts (and
    other devices) fall back to dequantizing. Those kernels are vectorised for bfloat16
    activations and slow for float32 ones, so ``backend="kernel-bf16"`` rounds the activations
    to bfloat16 for the matmul and returns the input's dtype (as torchao's CPU path does): several
    times faster at batch 1 on a wide layer, for a relative error of about 2⁻⁸ per activation.
    """

    def __init__(
        self, qweight: QuantizedWeight, bias: torch.Tensor | None, backend: str = "dequantize"
    ) -> None:
        super().__init__(qweight)
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), False)
        self.backend = backend

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, **kwargs: Any) -> QuantLinear:
        """Quantize ``linear``'s weight (keyword arguments as :func:`quantize_weight`)."""
        backend = kwargs.pop("backend", "dequantize")
        return cls(quantize_weight(linear.weight, bits, **kwargs), linear.bias, backend)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={s['bits']}, scheme={s['scheme']}, group_size={s['group_size']}, "
            f"backend={self.backend}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend != "dequantize" and x.device.type == "cpu":
            kernel = self._kernel()
            if kernel is not None:
                x2d = x.reshape(-1, self.in_features)
                if self.backend == "kernel-bf16":
                    x2d = x2d.to(torch.bfloat16)
                y = kernel(x2d).to(x.dtype).reshape(*x.shape[:-1], -1)
                return y if self.bias is None else y + self.bias.to(y.dtype)
        w = self.qweight.dequantize().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def _kernel(self):
        """A function x2d -> y2d using a PyTorch low-bit CPU kernel, or None if none fits."""
        if self._kernel_cache is None:
            self._kernel_cache = (_prepare_kernel(self.qweight),)
        return self._kernel_cache[0]


def _prepare_kernel(q: QuantizedWeight):
    rows, cols = q.shape
    if q.padded_in != cols:
        return None
    per_row = q.scale.shape == (rows, 1)
    if q.bits == 8 and q.zero is None and per_row and hasattr(torch, "_weight_int8pack_mm"):
        int8 = (q.codes().to(torch.int16) - 128).to(torch.int8).contiguous()
        scale = q.scale.float().reshape(rows).contiguous()

        def int8_mm(x: torch.Tensor) -> torch.Tensor:
            return torch._weight_int8pack_mm(x.contiguous(), int8, scale.to(x.dtype))

        return int8_mm
    convert = getattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", None)
    gs = q.group_size
    if q.bits != 4 or gs not in _INT4_KERNEL_GROUPS or convert is None or q.scale.shape[0] != rows:
        return None
    # tinygemm computes w = (c - 8) * scale + zero; ours is (c - z) * s, so zero = (8 - z) * s.
    scale = q.scale.float()
    zero = (8 - q.zero_points()) * scale
    scale_and_zero = torch.stack([scale.t(), zero.expand_as(scale).t()], -1).contiguous()
    packed = convert(q.codes().to(torch.int32).contiguous(), 1)

    def int4_mm(x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(
            x.contiguous(), packed, gs, scale_and_zero.to(x.dtype)
        )

    return int4_mm


class QuantEmbedding(_QuantStore):
    """``nn.Embedding`` whose table is quantized; a lookup dequantizes only the rows it reads."""

    def __init__(self, qweight: QuantizedWeight) -> None:
        super().__init__(qweight)
        self.num_embeddings, self.embedding_dim = qweight.shape

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float32 table, for code that reads ``.weight`` (its dtype, device)."""
        return self.qweight.dequantize()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        flat = idx.reshape(-1)
        return self.qweight.dequantize(rows=flat).reshape(*idx.shape, self.embedding_dim)


def _share_buffers(source: _QuantStore, target: _QuantStore) -> None:
    """Make ``target`` use ``source``'s tensors (the tied embedding and output matrix)."""
    for name, tensor in source.named_buffers(recurse=False):
        setattr(target, name, tensor)


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------


def _tied(model: nn.Module) -> bool:
    head, wte = getattr(model, "lm_head", None), _get(model, "transformer.wte")
    return head is not None and wte is not None and head.weight is getattr(wte, "weight", None)


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def linear_names(model: nn.Module) -> list[str]:
    """Names of the model's ``nn.Linear`` layers (``lm_head`` included), in order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def quantize_model(
    model: nn.Module,
    bits: int = 8,
    group_size: int | None = None,
    *,
    scheme: str = "absmax",
    per_tensor: bool = False,
    include_embedding: bool = True,
    modules: Sequence[str] | None = None,
    qmax: float | None = None,
    scale_dtype: torch.dtype = torch.float16,
    pad: bool = False,
    backend: str = "dequantize",
) -> nn.Module:
    """A copy of ``model`` with its linear layers (weights only) quantized.

    Args:
        model: a :class:`minillm.model.GPT` (or any module with ``nn.Linear`` layers); it is
            not modified.
        bits, group_size, scheme, per_tensor, qmax, scale_dtype, pad: as
            :func:`minillm.quantize.qtensor.quantize_weight`.
        include_embedding: also quantize the token embedding and the output layer (``lm_head``;
            one matrix when they are tied, quantized once and shared).
        modules: quantize only these linear layers (names from :func:`linear_names`); None
            means all of them.
        backend: ``"dequantize"``, ``"kernel"`` or ``"kernel-bf16"`` (see :class:`QuantLinear`).

    Raises:
        ValueError: bad settings, or a group size that does not divide a layer's width (the
            message names the layer).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    names = linear_names(model)
    if modules is not None:
        unknown = sorted(set(modules) - {*names, "transformer.wte"})
        if unknown:
            raise ValueError(f"no linear layers named {unknown}; the model has {names}")
    tied = _tied(model)
    out = copy.deepcopy(model)
    options = dict(
        group_size=group_size,
        per_tensor=per_tensor,
        scheme=scheme,
        qmax=qmax,
        scale_dtype=scale_dtype,
    )
    for name in names:
        if modules is not None and name not in modules:
            continue
        if name == "lm_head" and not include_embedding:
            continue
        linear = out.get_submodule(name)
        try:
            qweight = quantize_weight(linear.weight, bits, pad=pad, **options)
        except ValueError as err:
            raise ValueError(f"layer {name} ({tuple(linear.weight.shape)}): {err}") from None
        _set(out, name, QuantLinear(qweight, linear.bias, backend))
    wte = _get(out, "transformer.wte")
    if include_embedding and isinstance(wte, nn.Embedding):
        if tied and isinstance(out.lm_head, QuantLinear):
            embedding = QuantEmbedding(out.lm_head.qweight)
            _share_buffers(out.lm_head, embedding)
            _set(out, "transformer.wte", embedding)
        elif not tied and (modules is None or "transformer.wte" in modules):
            qweight = quantize_weight(wte.weight, bits, pad=pad, **options)
            _set(out, "transformer.wte", QuantEmbedding(qweight))
    return out.eval()


def dequantize(model: nn.Module) -> nn.Module:
    """A float copy of a quantized model: every quantized layer back to ``nn.Linear`` /
    ``nn.Embedding`` holding the dequantized weight (the tie restored when it was shared)."""
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, QuantLinear):
            linear = nn.Linear(module.in_features, module.out_features, module.bias is not None)
            linear.weight.data = module.qweight.dequantize()
            if module.bias is not None:
                linear.bias.data = module.bias.detach().clone()
            _set(out, name, linear)
        elif isinstance(module, QuantEmbedding):
            _set(out, name, nn.Embedding.from_pretrained(module.qweight.dequantize(), False))
    head, wte = getattr(out, "lm_head", None), _get(out, "transformer.wte")
    config = getattr(out, "config", None)
    if getattr(config, "tie_weights", False) and head is not None and wte is not None:
        head.weight = wte.weight
    return out


def _unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with shared tensors kept once, and {alias: name kept}."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor
    return unique, aliases


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's distinct weights and buffers (tied matrices counted once)."""
    unique, _ = _unique_state(model)
    return sum(t.numel() * t.element_size() for t in unique.values())


def _quant_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    specs = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            specs[name] = {"kind": "linear", "bias": m.bias is not None, **m.spec}
        elif isinstance(m, QuantEmbedding):
            specs[name] = {"kind": "embedding", **m.spec}
    return specs


def save_quantized(
    model: nn.Module, path: str | os.PathLike[str], *, tokenizer_fingerprint: str | None = None
) -> Path:
    """Write a quantized GPT to a safetensors file, atomically; returns the path.

    The file holds each distinct tensor once (the tied matrix once) and, in its metadata, the
    model configuration, the layout of every quantized layer, the tokenizer's fingerprint and the
    checksums of :mod:`minillm.utils.integrity` (the same scheme as checkpoints).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError("save_quantized needs a minillm GPT (a model with a GPTConfig .config)")
    unique, aliases = _unique_state(model)
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "layers": _quant_specs(model),
        "aliases": aliases,
        FINGERPRINT_KEY: tokenizer_fingerprint,
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in unique.items()}
    return write_sealed(path, tensors, header)


def is_quantized_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a safetensors file written by :func:`save_quantized`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            header = json.loads((file.metadata() or {}).get("minillm", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError):
        return False
    return header.get("format") == FORMAT


def quantized_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """The tokenizer fingerprint a quantized file records (None when its run had none)."""
    return read_sealed_header(path).get(FINGERPRINT_KEY)


def check_quantized_tokenizer(
    path: str | os.PathLike[str], tokenizer: Any, source: Any = ""
) -> None:
    """Refuse a tokenizer other than the one the quantized model's checkpoint was trained with."""
    check_fingerprint(quantized_fingerprint(path), tokenizer, path, source)


def load_quantized(path: str | os.PathLike[str], *, legacy: bool = False) -> nn.Module:
    """Rebuild the quantized GPT saved by :func:`save_quantized` (eval mode, CPU).

    The header is verified first, and a configuration needing far more parameters than the file
    holds is refused before anything is allocated; then every tensor's checksum. A file without
    checksums is refused unless ``legacy=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a minillm quantized model, or is corrupt or edited
            (:class:`minillm.utils.IntegrityError`).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no quantized model at {path}")
    if not is_quantized_file(path):
        raise ValueError(f"{path} is not a quantized model written by minillm.quantize")
    try:
        infos, _, _ = read_header(path)
        header = read_sealed_header(path)
        verify_sealed(path, header, legacy=legacy, what="quantized model")
        # packed codes hold up to 4 weights per byte (2-bit): bound the claim by that
        held = 4 * sum(math.prod(info.shape) for info in infos.values())
        refuse_oversized(path, _parameters_at_least(header["config"]), held)
        with safe_open(str(path), framework="pt") as file:
            state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, SafetensorsFormatError, OSError) as err:
        raise ValueError(
            f"{path} is not a readable quantized model (truncated or corrupt?): {err}"
        ) from err
    verify_sealed(path, header, state, legacy=legacy, what="quantized model")
    model = GPT(GPTConfig.from_dict(header["config"]))
    stores: dict[tuple[str, ...], _QuantStore] = {}
    for name, spec in header["layers"].items():
        empty = QuantizedWeight.empty(spec)
        if spec["kind"] == "linear":
            bias = torch.zeros(spec["shape"][0]) if spec["bias"] else None
            module: _QuantStore = QuantLinear(empty, bias)
        else:
            module = QuantEmbedding(empty)
        _set(model, name, module)
        stores[name] = module
    for alias, target in header["aliases"].items():
        alias_module, _, buffer = alias.rpartition(".")
        target_module = target.rpartition(".")[0]
        if alias_module in stores and target_module in stores:
            _share_buffers(stores[target_module], stores[alias_module])
        state[alias] = state[target]
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# What quantization costs: KL divergence and top-1 agreement with the float model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """A quantized model measured against its float reference on the same tokens.

    ``mean_kl`` is KL(reference ‖ candidate) in nats per token; ``top1`` the share of positions
    where both predict the same most likely token; ``nll`` / ``reference_nll`` the summed
    negative log-likelihoods (nats) of the true next tokens.
    """

    mean_kl: float
    top1: float
    nll: float
    reference_nll: float
    n_tokens: int

    @property
    def delta_nll_per_token(self) -> float:
        return (self.nll - self.reference_nll) / self.n_tokens


@torch.inference_mode()
def logit_agreement(
    reference: nn.Module,
    candidates: Mapping[str, nn.Module],
    ids: Sequence[int] | torch.Tensor,
    *,
    block_size: int | None = None,
    batch_size: int = 16,
) -> dict[str, Agreement]:
    """KL divergence, top-1 agreement and NLL of each candidate against ``reference``.

    The tokens are cut into non-overlapping windows of ``block_size`` (the model's context by
    default), the same windows :func:`minillm.evaluate.metrics.token_nlls` uses by default; the
    reference is run once per batch and shared by every candidate.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    block = block_size or reference.config.block_size
    n_windows = (ids.numel() - 1) // block
    if n_windows < 1:
        raise ValueError(f"need more than {block} tokens to score a window, got {ids.numel()}")
    sums = {name: torch.zeros(4, dtype=torch.float64) for name in candidates}  # kl, top1, nll
    ref_nll = 0.0
    for m in (reference, *candidates.values()):
        m.eval()
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        x = torch.stack([ids[r * block : (r + 1) * block] for r in rows])
        y = torch.stack([ids[r * block + 1 : (r + 1) * block + 1] for r in rows])
        ref = torch.log_softmax(reference(x)[0].float(), -1)  # (B, T, V)
        ref_nll += float(F.nll_loss(ref.flatten(0, 1), y.flatten(), reduction="sum"))
        ref_top = ref.argmax(-1)
        p_ref = ref.exp()
        for name, model in candidates.items():
            cand = torch.log_softmax(model(x)[0].float(), -1)
            kl = (p_ref * (ref - cand)).sum(-1).clamp(min=0)  # tiny negatives: rounding
            nll = F.nll_loss(cand.flatten(0, 1), y.flatten(), reduction="sum")
            agree = (cand.argmax(-1) == ref_top).sum()
            sums[name] += torch.tensor([kl.sum().item(), agree.item(), nll.item(), 0.0])
    n = n_windows * block
    return {
        name: Agreement(
            mean_kl=float(s[0]) / n,
            top1=float(s[1]) / n,
            nll=float(s[2]),
            reference_nll=ref_nll,
            n_tokens=n,
        )
        for name, s in sums.items()
    }
