"""A complete GGUF file that llama.cpp runs: hyper-parameters, tokenizer, chat template, tensors.

Lessons 10 and 12 (planned home: ``minillm/quantize/gguf_export.py``). :func:`minillm.gguf.write_gguf`
writes the tensors only; :func:`export_gguf` adds everything a GGUF runtime needs to load the
file with no conversion step:

- the architecture's hyper-parameters (``gptneox.*`` for the course model's rotary positions,
  ``gpt2.*`` for learned ones), with ``output.weight`` stored beside ``token_embd.weight``:
  llama.cpp's GPT-NeoX loader requires both, so the tied matrix is written twice, and a
  recipe may give its two uses different precisions;
- the tokenizer (:func:`tokenizer_metadata`): byte-level BPE tokens spelled with GPT-2's
  byte-to-character map, merges, token types, the pre-tokenizer and the BOS/EOS/padding ids;
- the chat template, for a tokenizer that has lesson 08's chat tokens.

**The pre-tokenizer.** llama.cpp does not read the regex from the file: ``tokenizer.ggml.pre``
names one of its built-in splitters. The course tokenizer uses GPT-4's regex in tiktoken's form
(:data:`minillm.tokenizer.GPT4_PATTERN`); no llama.cpp splitter has that exact text. Its
``llama-bpe`` splitter (Llama 3's) has the regex cl100k_base was published with,
``(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+``,
which tiktoken later rewrote with possessive quantifiers and an extra ``\\s++$`` branch. The
possessive forms split every text the same way; ``\\s++$`` differs in one case only: whitespace
at the very end of a text that holds a line break followed by more whitespace (``"a\\n "`` is
``["a", "\\n "]`` for minillm, ``["a", "\\n", " "]`` for llama.cpp). The ids differ only when a token spans that cut, a line
break followed by other whitespace; the course vocabulary has no such token
(:func:`tokens_across_line_breaks` lists them), so llama.cpp gives minillm's ids on every text.
``llama-bpe`` also turns on tiktoken's shortcut (a chunk that is a whole token is that token,
``ignore_merges``). The GPT-2 regex maps to llama.cpp's ``gpt-2`` splitter.

**The merges.** minillm (like tiktoken) merges the adjacent pair whose *merged bytes* have the
lowest id; llama.cpp merges the pair that comes first in the merge list. The two agree when the
list holds every split of every token into two tokens, ordered by the merged token's id, which
is what :func:`llama_merges` writes (the training merges alone miss pairs such as ``a + bc``
when ``abc`` was learned as ``ab + c``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minillm.finetune.sft import CHAT_TEMPLATE, CHAT_TOKENS, END
from minillm.quantize.gguf import (
    _gguf_arch,
    _import_gguf,
    gguf_name,
    quantize_blocks,
    write_gguf_file,
)
from minillm.quantize.qtensor import GGML_BLOCK
from minillm.tokenizer.gpt2 import _bytes_to_unicode
from minillm.tokenizer.pretokenize import ENDOFTEXT, GPT2_PATTERN, GPT4_PATTERN

__all__ = [
    "GGUF_QTYPES",
    "PRE_TOKENIZERS",
    "export_gguf",
    "LLAMA3_REGEX",
    "gguf_chat_template",
    "llama_merges",
    "tensor_types",
    "tokenizer_metadata",
    "tokens_across_line_breaks",
]

GGUF_QTYPES: dict[str, str] = {
    "f32": "every tensor in float32: llama.cpp's float math on minillm's exact weights",
    "f16": "weight matrices (embedding, output, linear layers) in float16; norms and biases f32",
    "q8_0": "every weight matrix in Q8_0 (8-bit codes, one fp16 scale per 32 weights)",
    "q4_0": "every weight matrix in Q4_0 (4-bit codes, one fp16 scale per 32 weights), "
    "the tied embedding/output matrix included",
    "mixed": "linear layers in Q4_0, the tied embedding/output matrix in Q8_0 "
    "(llama.cpp's practice of keeping the embedding and output at higher precision)",
}
"""``--qtype`` names and what each stores (``minillm export --format gguf --help`` shows these)."""

_RECIPES: dict[str, dict[str, str]] = {
    "f32": {"linear": "f32", "token_embd": "f32", "output": "f32"},
    "f16": {"linear": "f16", "token_embd": "f16", "output": "f16"},
    "q8_0": {"linear": "q8_0", "token_embd": "q8_0", "output": "q8_0"},
    "q4_0": {"linear": "q4_0", "token_embd": "q4_0", "output": "q4_0"},
    "mixed": {"linear": "q4_0", "token_embd": "q8_0", "output": "q8_0"},
}
_TENSOR_TYPES = ("f32", "f16", "q8_0", "q4_0")

PRE_TOKENIZERS: dict[str, str] = {GPT4_PATTERN: "llama-bpe", GPT2_PATTERN: "gpt-2"}
"""minillm's pre-tokenization regex -> the name of llama.cpp's splitter (see the module notes)."""

# llama.cpp's token types (gguf.TokenType): ordinary, control (special) and unused (padding rows)
_NORMAL, _CONTROL, _UNUSED = 1, 3, 5


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


def llama_merges(tokenizer: Any) -> list[tuple[int, int]]:
    """Every (left id, right id) whose bytes join into another ordinary token, in llama.cpp's
    rank order: by the merged token's id, the training merge first among a token's splits.

    With this list, llama.cpp's rule (the pair listed first merges first) gives minillm's ids.
    """
    ranks: dict[bytes, int] = tokenizer._ranks  # same package
    trained = {(a, b) for a, b, _ in tokenizer.merges}
    out = []
    for token in sorted(ranks, key=ranks.__getitem__):
        splits = []
        for cut in range(1, len(token)):
            left, right = ranks.get(token[:cut]), ranks.get(token[cut:])
            if left is not None and right is not None:
                splits.append(((left, right) not in trained, left, right))
        out += [(left, right) for _, left, right in sorted(splits)]
    return out


def gguf_chat_template(template: str) -> str:
    """A ``transformers`` chat template without its ``{% generation %}`` markers, which only
    ``transformers`` knows (they mark the assistant's tokens for training masks); llama.cpp's
    and llama-cpp-python's Jinja engines reject the unknown tag."""
    for tag in ("{% generation %}", "{%- generation -%}", "{% endgeneration %}"):
        template = template.replace(tag, "")
    return template.replace("{%- endgeneration -%}", "")


def tokenizer_metadata(
    tokenizer: Any, n_vocab: int, chat_template: str | None = None
) -> dict[str, Any]:
    """The ``tokenizer.*`` keys of a GGUF file for a :class:`minillm.tokenizer.BPETokenizer`.

    Args:
        tokenizer: a byte-level BPE tokenizer with the GPT-4 or GPT-2 regex.
        n_vocab: the model's embedding rows; ids the tokenizer does not use are written as
            unused placeholder tokens, so the token list matches the tensors.
        chat_template: the Jinja chat template to store; default: lesson 08's
            (:data:`minillm.sft.CHAT_TEMPLATE`) when the tokenizer has its chat tokens, else none.

    Returns:
        ``{key: value}`` with ``tokens``, ``token_types``, ``merges`` (strings ``"left right"``),
        ``pre``, ``bos``/``eos``/``pad`` ids, ``eot`` (chat models) and ``chat_template``.

    Raises:
        ValueError: a regex llama.cpp has no splitter for, a tokenizer larger than ``n_vocab``,
            or no ``<|endoftext|>`` token.
    """

    if tokenizer.pattern not in PRE_TOKENIZERS:
        raise ValueError(
            "llama.cpp has built-in pre-tokenizers only; minillm maps the 'gpt4' and 'gpt2' "
            f"patterns to them, and this tokenizer's regex is neither: {tokenizer.pattern!r}"
        )
    if tokenizer.vocab_size > n_vocab:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {n_vocab} embeddings"
        )
    specials = tokenizer.special_tokens
    if ENDOFTEXT not in specials:
        raise ValueError(f"the tokenizer needs a {ENDOFTEXT} token for BOS/EOS; it has {specials}")
    spell = _bytes_to_unicode()
    tokens = [f"<|unused_{i}|>" for i in range(n_vocab)]
    types = [_UNUSED] * n_vocab
    by_id: dict[int, bytes] = {}
    for token, i in tokenizer._ranks.items():  # same package
        by_id[i] = token
        tokens[i], types[i] = "".join(spell[b] for b in token), _NORMAL
    for text, i in specials.items():
        tokens[i], types[i] = text, _CONTROL
    merges = [f"{tokens[a]} {tokens[b]}" for a, b in llama_merges(tokenizer)]
    is_chat = all(t in specials for t in CHAT_TOKENS)
    eot = specials[ENDOFTEXT]
    meta: dict[str, Any] = {
        "model": "gpt2",  # llama.cpp's name for byte-level BPE
        "pre": PRE_TOKENIZERS[tokenizer.pattern],
        "tokens": tokens,
        "token_types": types,
        "merges": merges,
        "bos": eot,
        # a chat model stops at the end of its turn; a base model at the end of a document
        "eos": specials[END] if is_chat else eot,
        "pad": eot,
        "eot": specials[END] if is_chat else None,
        "chat_template": None,
    }
    if chat_template is not None or is_chat:
        meta["chat_template"] = gguf_chat_template(chat_template or CHAT_TEMPLATE)
    return meta


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------


def tensor_types(model: nn.Module, recipe: str | dict[str, str]) -> dict[str, str]:
    """GGUF tensor name -> stored type (``f32``, ``f16``, ``q8_0``, ``q4_0``) for a recipe.

    ``recipe`` is a ``--qtype`` name or a dict with the keys ``linear``, ``token_embd`` and
    ``output``. Vectors (norms, biases), the learned position table and any matrix whose rows
    are not whole blocks of 32 stay float32, as llama.cpp's own converter keeps them.
    """
    if isinstance(recipe, str):
        if recipe not in _RECIPES:
            raise ValueError(f"qtype must be one of {list(_RECIPES)}, got {recipe!r}")
        recipe = _RECIPES[recipe]
    if set(recipe) != {"linear", "token_embd", "output"} or any(
        v not in _TENSOR_TYPES for v in recipe.values()
    ):
        raise ValueError(
            "a recipe maps 'linear', 'token_embd' and 'output' each to one of "
            f"{_TENSOR_TYPES}, got {recipe!r}"
        )
    out = {}
    for name, tensor in _named_tensors(model).items():
        role = name.split(".")[0] if name in ("token_embd.weight", "output.weight") else "linear"
        kind = recipe[role]
        floats = tensor.dim() != 2 or name == "position_embd.weight"
        if floats or (kind in ("q8_0", "q4_0") and tensor.shape[1] % GGML_BLOCK):
            kind = "f32"
        out[name] = kind
    return out


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """GGUF name -> float32 tensor; ``output.weight`` always present (the tied matrix again)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        out[gguf_name(name)] = tensor.detach().float().cpu()
    out["output.weight"] = model.lm_head.weight.detach().float().cpu()
    return out


def _file_type(gguf: Any, recipe: str) -> Any:
    """``general.file_type``: llama.cpp's label for the bulk of the weights."""
    names = {
        "f32": "ALL_F32",
        "f16": "MOSTLY_F16",
        "q8_0": "MOSTLY_Q8_0",
        "q4_0": "MOSTLY_Q4_0",
        "mixed": "MOSTLY_Q4_0",
    }
    return getattr(gguf.LlamaFileType, names.get(recipe, "MOSTLY_Q4_0"))


def _add_tensor(writer: Any, gguf: Any, name: str, tensor: torch.Tensor, kind: str) -> None:
    if kind == "f32":
        writer.add_tensor(name, tensor.numpy())
    elif kind == "f16":
        writer.add_tensor(name, tensor.numpy().astype(np.float16))
    else:
        raw = getattr(gguf.GGMLQuantizationType, kind.upper())
        writer.add_tensor(name, quantize_blocks(tensor, kind), raw_dtype=raw)


# ---------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------


def export_gguf(
    model: nn.Module,
    tokenizer: Any,
    path: str | os.PathLike[str],
    qtype: str | dict[str, str] = "q8_0",
    *,
    chat_template: str | None = None,
    name: str = "minillm",
) -> Path:
    """Write ``model`` and ``tokenizer`` as one GGUF file llama.cpp loads as is, atomically.

    Args:
        model: a float :class:`minillm.model.GPT` with GPT-2's blocks (learned or rotary
            positions; LayerNorm, GELU, no grouped-query heads).
        tokenizer: its :class:`minillm.tokenizer.BPETokenizer` (GPT-4 or GPT-2 regex).
        path: the ``.gguf`` file to write.
        qtype: a name of :data:`GGUF_QTYPES`, or a recipe dict (see :func:`tensor_types`).
        chat_template: the Jinja chat template; default: lesson 08's for a tokenizer with the
            chat tokens, none for a base model.
        name: ``general.name``.

    Returns:
        The path written.

    Raises:
        ValueError: an unknown ``qtype``, a model llama.cpp would misread, a quantized model,
            or a tokenizer llama.cpp cannot reproduce (see :func:`tokenizer_metadata`).
    """
    gguf = _import_gguf()
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError("export_gguf needs a minillm GPT (a model with a GPTConfig .config)")
    arch = _gguf_arch(config)
    types = tensor_types(model, qtype)
    tensors = _named_tensors(model)
    if any(not t.is_floating_point() for t in tensors.values()) or any(
        not isinstance(p, torch.Tensor) or not p.is_floating_point() for p in model.parameters()
    ):
        raise ValueError("export_gguf takes a float model; dequantize it first")
    meta = tokenizer_metadata(tokenizer, config.vocab_size, chat_template)

    def fill(writer: Any) -> None:
        _add_hyper_parameters(writer, gguf, config, arch, name, qtype)
        _add_tokenizer(writer, meta)
        for tensor_name, tensor in tensors.items():
            _add_tensor(writer, gguf, tensor_name, tensor, types[tensor_name])

    return write_gguf_file(path, arch, fill)


def _add_hyper_parameters(
    writer: Any, gguf: Any, config: Any, arch: str, name: str, qtype: str | dict
) -> None:
    writer.add_name(name)
    writer.add_file_type(_file_type(gguf, qtype if isinstance(qtype, str) else "mixed"))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.ffn_dim)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_layer_norm_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if arch == "gptneox":
        writer.add_rope_dimension_count(config.head_dim)  # every dimension of a head rotates
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_parallel_residual(False)  # minillm's blocks are sequential (GPT-2's)


def _add_tokenizer(writer: Any, meta: dict[str, Any]) -> None:
    writer.add_tokenizer_model(meta["model"])
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["token_types"])
    writer.add_token_merges(meta["merges"])
    writer.add_bos_token_id(meta["bos"])
    writer.add_eos_token_id(meta["eos"])
    writer.add_pad_token_id(meta["pad"])
    if meta["eot"] is not None:
        writer.add_eot_token_id(meta["eot"])
    # minillm encodes a prompt as it is: no BOS in front, no EOS after
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if meta["chat_template"] is not None:
        writer.add_chat_template(meta["chat_template"])


LLAMA3_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""The regex of llama.cpp's ``llama-bpe`` splitter (cl100k_base as first published), in
Python's ``regex`` syntax, to compare with :data:`minillm.tokenizer.GPT4_PATTERN`."""


def tokens_across_line_breaks(tokenizer: Any, extra: list[bytes] | None = None) -> list[bytes]:
    """Ordinary tokens (and ``extra`` byte strings) holding a line break followed by another
    byte: the only tokens that could give llama.cpp's ``llama-bpe`` different ids from minillm's
    GPT-4 regex (by spanning the cut llama.cpp makes after the last line break of trailing
    whitespace). An empty list means the two tokenizers agree on every text."""
    candidates = [*tokenizer._ranks, *(extra or [])]  # same package
    return [
        t
        for t in candidates
        if any(b in b"\r\n" and n not in b"\r\n" for b, n in zip(t, t[1:], strict=False))
    ]
