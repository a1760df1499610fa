"""llama.cpp's GGUF block formats Q8_0 and Q4_0, built by minillm, and .gguf files (lesson 10).

A block covers 32 consecutive weights of a row:

- **Q8_0** (34 bytes): the scale ``d`` as fp16, then 32 int8 codes; ``w = d · q``.
- **Q4_0** (18 bytes): ``d`` as fp16, then 16 bytes holding 32 4-bit codes: byte ``j`` has code
  ``j`` in its low nibble and code ``j + 16`` in its high nibble; ``w = d · (c - 8)``.

The codes come from :func:`minillm.quantize.quantize_weight` (schemes ``"q8_0"`` and
``"q4_0"``); this module only lays them out as llama.cpp stores them. :func:`write_gguf` writes a
GPT as a ``.gguf`` file with the ``gguf`` package (``pip install gguf``, in the ``course`` extra),
naming tensors as llama.cpp's GPT-2 loader does (architecture ``gpt2``; with rotary positions,
``gptneox``, whose loader uses the same tensor names and the same [q | k | v] row order).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minillm.quantize.qtensor import GGML_BLOCK, QuantizedWeight, quantize_weight

QTYPES = ("q8_0", "q4_0", "f32")
BLOCK_BYTES = {"q8_0": 2 + GGML_BLOCK, "q4_0": 2 + GGML_BLOCK // 2}


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "writing and reading .gguf files needs the gguf package: "
            "pip install 'minillm[course]' (or pip install gguf)"
        ) from err
    return gguf


def _check_blocks(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError(f"weight must be a 2-D tensor, got {type(weight).__name__}")
    if weight.shape[1] % GGML_BLOCK:
        raise ValueError(
            f"GGUF blocks hold {GGML_BLOCK} weights of a row; the row length "
            f"{weight.shape[1]} is not a multiple of {GGML_BLOCK}"
        )


def _scale_bytes(q: QuantizedWeight) -> np.ndarray:
    """(rows, blocks, 2): each block's scale as little-endian fp16 bytes."""
    return q.scale.to(torch.float16).contiguous().numpy().view(np.uint8).reshape(*q.scale.shape, 2)


def q8_0_blocks(q: QuantizedWeight) -> np.ndarray:
    """The Q8_0 bytes (rows, blocks * 34) of a weight quantized with ``scheme="q8_0"``."""
    if q.scheme != "q8_0":
        raise ValueError(f"q8_0_blocks needs scheme 'q8_0', got {q.scheme!r}")
    rows, cols = q.shape
    codes = (q.codes().to(torch.int16) - 128).to(torch.int8).numpy().view(np.uint8)
    codes = codes.reshape(rows, cols // GGML_BLOCK, GGML_BLOCK)
    return np.concatenate([_scale_bytes(q), codes], axis=-1).reshape(rows, -1)


def q4_0_blocks(q: QuantizedWeight) -> np.ndarray:
    """The Q4_0 bytes (rows, blocks * 18) of a weight quantized with ``scheme="q4_0"``."""
    if q.scheme != "q4_0":
        raise ValueError(f"q4_0_blocks needs scheme 'q4_0', got {q.scheme!r}")
    rows, cols = q.shape
    codes = q.codes().numpy().reshape(rows, cols // GGML_BLOCK, GGML_BLOCK)
    half = GGML_BLOCK // 2
    nibbles = codes[..., :half] | (codes[..., half:] << 4)  # ggml's order, not (2j, 2j+1)
    return np.concatenate([_scale_bytes(q), nibbles.astype(np.uint8)], axis=-1).reshape(rows, -1)


def quantize_blocks(weight: torch.Tensor, qtype: str) -> np.ndarray:
    """``weight`` (rows, cols) as GGUF ``qtype`` bytes (rows, bytes per row), as
    ``gguf.quants.quantize(weight.numpy(), GGMLQuantizationType.<QTYPE>)`` returns them."""
    _check_blocks(weight)
    if qtype == "q8_0":
        return q8_0_blocks(quantize_weight(weight, 8, scheme="q8_0"))
    if qtype == "q4_0":
        return q4_0_blocks(quantize_weight(weight, 4, scheme="q4_0"))
    raise ValueError(f"qtype must be 'q8_0' or 'q4_0', got {qtype!r}")


def dequantize_blocks(data: np.ndarray, qtype: str) -> np.ndarray:
    """Float32 weights (rows, cols) from GGUF ``qtype`` bytes (rows, bytes per row)."""
    if qtype not in BLOCK_BYTES:
        raise ValueError(f"qtype must be 'q8_0' or 'q4_0', got {qtype!r}")
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] % BLOCK_BYTES[qtype]:
        raise ValueError(
            f"{qtype} rows are whole {BLOCK_BYTES[qtype]}-byte blocks, got shape {data.shape}"
        )
    blocks = data.reshape(data.shape[0], -1, BLOCK_BYTES[qtype])
    d = blocks[..., :2].copy().view(np.float16).astype(np.float32)  # (rows, blocks, 1)
    if qtype == "q8_0":
        q = blocks[..., 2:].view(np.int8).astype(np.float32)
    else:
        packed = blocks[..., 2:]
        q = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).astype(np.float32) - 8
    return (d * q).reshape(data.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# .gguf files
# ---------------------------------------------------------------------------------------------

_GPT2_NAMES = [
    (r"transformer\.wte\.weight", "token_embd.weight"),
    (r"transformer\.wpe\.weight", "position_embd.weight"),
    (r"transformer\.ln_f\.(weight|bias)", r"output_norm.\1"),
    (r"lm_head\.weight", "output.weight"),
    (r"transformer\.h\.(\d+)\.ln_1\.(weight|bias)", r"blk.\1.attn_norm.\2"),
    (r"transformer\.h\.(\d+)\.ln_2\.(weight|bias)", r"blk.\1.ffn_norm.\2"),
    (r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"blk.\1.attn_qkv.\2"),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"blk.\1.attn_output.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blk.\1.ffn_up.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blk.\1.ffn_down.\2"),
]


def gguf_name(name: str) -> str:
    """llama.cpp's GPT-2 tensor name for a minillm parameter name (unknown names unchanged)."""
    for pattern, replacement in _GPT2_NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    return name


def _float_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Distinct float tensors of the model (a tied output matrix kept once, as the embedding)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor.detach().float().cpu()
    return out


def write_gguf_file(path: str | os.PathLike, arch: str, fill: Callable[[Any], None]) -> Path:
    """Write a GGUF file atomically: ``fill(writer)`` adds the keys and tensors to a
    ``gguf.GGUFWriter``; the file appears complete at ``path`` or not at all."""
    gguf = _import_gguf()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_gguf(model: nn.Module, path: str | os.PathLike[str], qtype: str = "q8_0") -> Path:
    """Write a float minillm GPT as a ``.gguf`` file, atomically; returns the path.

    2-D weights whose rows are whole blocks of 32 are stored as ``qtype``; the position
    embedding, norms, biases and any other tensor as F32. The architecture keys are llama.cpp's
    ``gpt2.*``, or ``gptneox.*`` (sequential residuals, every head dimension rotated) for a
    model with rotary positions; no tokenizer is embedded, so the file is a container for the
    tensors, not a model llama.cpp can chat with.

    Raises:
        ValueError: an unknown ``qtype``, a model that is already quantized, or a model with
            neither GPT-2's nor GPT-NeoX's blocks (RMSNorm, SwiGLU or grouped-query heads).
    """
    if qtype not in QTYPES:
        raise ValueError(f"qtype must be one of {QTYPES}, got {qtype!r}")
    gguf = _import_gguf()
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError("write_gguf needs a minillm GPT (a model with a GPTConfig .config)")
    arch = _gguf_arch(config)
    tensors = _float_tensors(model)
    if any(t.dtype != torch.float32 or not t.is_floating_point() for t in tensors.values()):
        raise ValueError("write_gguf takes a float model; dequantize it first")

    def fill(writer: Any) -> None:
        writer.add_name("minillm")
        if arch == "gptneox":
            writer.add_rope_dimension_count(config.head_dim)
            writer.add_rope_freq_base(config.rope_theta)
            writer.add_parallel_residual(False)
        writer.add_context_length(config.block_size)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.ffn_dim)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(_FILE_TYPES[qtype](gguf))
        for name, tensor in tensors.items():
            _add_tensor(writer, gguf, gguf_name(name), tensor, qtype)

    return write_gguf_file(path, arch, fill)


def _gguf_arch(config: Any) -> str:
    """llama.cpp's architecture for a minillm configuration: ``gpt2`` or ``gptneox``."""
    misfits = [
        f"{name}={getattr(config, name)!r} (need {want!r})"
        for name, want in (("norm", "layernorm"), ("mlp", "gelu"))
        if getattr(config, name) != want
    ]
    if config.num_kv_heads != config.n_head:
        misfits.append(f"n_kv_head={config.n_kv_head} (need n_head={config.n_head})")
    if misfits:
        raise ValueError(
            "write_gguf writes GPT-2's blocks (learned or rotary positions) only; this model has "
            + ", ".join(misfits)
        )
    return "gptneox" if config.pos_emb == "rope" else "gpt2"


_FILE_TYPES = {
    "q8_0": lambda g: g.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": lambda g: g.LlamaFileType.MOSTLY_Q4_0,
    "f32": lambda g: g.LlamaFileType.ALL_F32,
}


def _add_tensor(writer: Any, gguf: Any, name: str, tensor: torch.Tensor, qtype: str) -> None:
    quantizable = tensor.dim() == 2 and tensor.shape[1] % GGML_BLOCK == 0
    if qtype == "f32" or not quantizable or name == "position_embd.weight":
        writer.add_tensor(name, tensor.numpy())
        return
    raw = getattr(gguf.GGMLQuantizationType, qtype.upper())
    writer.add_tensor(name, quantize_blocks(tensor, qtype), raw_dtype=raw)


def read_gguf(path: str | os.PathLike[str]) -> dict[str, tuple[str, np.ndarray]]:
    """Every tensor of a ``.gguf`` file as ``{name: (type name, float32 array (rows, cols))}``,
    read and dequantized by the ``gguf`` package (not by minillm)."""
    gguf = _import_gguf()
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # ggml lists ne0 first
        out[t.name] = (t.tensor_type.name, np.asarray(values, dtype=np.float32).reshape(shape))
    return out
