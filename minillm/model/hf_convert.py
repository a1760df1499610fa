"""Conversion between the GPT and ``transformers``' models (lesson 04's weight layout, in use).

:func:`from_hf` and :func:`to_hf` convert a :class:`minillm.model.GPT` to and from
``transformers``' ``GPT2LMHeadModel`` / ``GPTNeoXForCausalLM`` / ``LlamaForCausalLM`` (the GPT-2
preset maps to the first, the same blocks with RoPE to the second, the Llama-style preset to the
third); the key and config mappings are in :mod:`minillm.model.hf_layouts`.
:meth:`GPT.from_hf <minillm.model.GPT.from_hf>`, :meth:`GPT.to_hf <minillm.model.GPT.to_hf>` and
:meth:`GPT.from_pretrained <minillm.model.GPT.from_pretrained>` call them; the class to build is
passed in (``cls``), so this module never imports the GPT. ``transformers`` is imported only when
a conversion runs (the ``course`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import minillm.utils.safefile as safefile
from minillm.model.config import GPTConfig
from minillm.model.hf_layouts import (
    _HF_TO_MINILLM,
    _config_from_hf,
    _gpt2_config_kwargs,
    _gpt_neox_config_kwargs,
    _llama_config_kwargs,
    _load_into_hf,
    _minillm_to_gpt2,
    _minillm_to_gpt_neox,
    _minillm_to_llama,
)
from minillm.utils.safefile import MANIFEST_NAME, verify_manifest

__all__ = ["from_hf", "from_pretrained", "hf_layout_of", "hf_state_dict", "to_hf"]


# Conversion to and from transformers
# ---------------------------------------------------------------------------------------------


def from_hf(source: Any, config: Any = None, *, cls: type) -> nn.Module:
    """A GPT with the weights of a ``transformers`` GPT-2, GPT-NeoX or Llama model.

    Args:
        source: a ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` or ``LlamaForCausalLM`` (or a
            model with the same layout), or its state dict.
        config: needed with a state dict: the ``transformers`` config (GPT2Config,
            GPTNeoXConfig or LlamaConfig) or an equivalent :class:`GPTConfig`. Ignored for a model.
        cls: the class to build (a subclass of :class:`GPT`).

    Raises:
        ValueError: unsupported architecture options, or weights that do not fit (missing,
            unexpected or wrongly shaped keys, all listed).
    """
    if isinstance(source, nn.Module):
        config, state_dict = source.config, source.state_dict()
    elif isinstance(source, dict):
        state_dict = source
        if config is None:
            raise ValueError(
                "from_hf with a state dict needs config= (a transformers config or a GPTConfig)"
            )
    else:
        raise TypeError(
            f"from_hf expects a transformers model or a state dict, got {type(source).__name__}"
        )
    layout = _detect_layout(state_dict)
    gpt_config = config if isinstance(config, GPTConfig) else _config_from_hf(config, layout)
    model = cls(gpt_config)
    dtype = model.transformer.wte.weight.dtype
    converted = {k: v.to(dtype) for k, v in _HF_TO_MINILLM[layout](state_dict, gpt_config).items()}
    model.load_weights(converted)
    return model


def to_hf(model: nn.Module, **config_overrides: Any) -> nn.Module:
    """``model`` as a ``transformers`` ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` or
    ``LlamaForCausalLM``, in eval mode.

    GPT-2 layout: learned positions, LayerNorm, GELU, no grouped heads (missing biases are
    exported as zeros). GPT-NeoX layout: the same with RoPE (sequential residuals; missing biases
    as zeros). Llama layout: RoPE, RMSNorm, SwiGLU. ``config_overrides`` go to the
    ``transformers`` config (for example ``eos_token_id=...``).

    Raises:
        ValueError: the configuration fits neither layout (the message says why).
    """
    transformers = _import_transformers()
    layout = hf_layout_of(model.config)
    if layout == "gpt2":
        hf_config = transformers.GPT2Config(
            **{**_gpt2_config_kwargs(model.config), **config_overrides}
        )
        hf_model = transformers.GPT2LMHeadModel(hf_config)
        state_dict = _minillm_to_gpt2(model.state_dict(), model.config)
    elif layout == "gpt_neox":
        hf_config = transformers.GPTNeoXConfig(
            **{**_gpt_neox_config_kwargs(model.config), **config_overrides}
        )
        hf_model = transformers.GPTNeoXForCausalLM(hf_config)
        state_dict = _minillm_to_gpt_neox(model.state_dict(), model.config)
    else:
        hf_config = transformers.LlamaConfig(
            **{**_llama_config_kwargs(model.config), **config_overrides}
        )
        hf_model = transformers.LlamaForCausalLM(hf_config)
        state_dict = _minillm_to_llama(model.state_dict(), model.config)
    _load_into_hf(hf_model, state_dict)
    return hf_model.eval()


def from_pretrained(name_or_path: str | os.PathLike[str], *, cls: type) -> nn.Module:
    """Load a GPT-2, GPT-NeoX or Llama model saved by ``save_pretrained``, or from the hub.

    A local folder is read without any network access. A hub name (``"gpt2"``) is downloaded
    only when the hub is reachable and ``HF_HUB_OFFLINE`` is not set.

    A local folder holding a ``SHA256SUMS`` manifest (written by ``minillm export``) is checked
    against it first.

    Raises:
        ValueError: a local folder does not match its manifest.
        OSError: offline (or the hub is unreachable) and ``name_or_path`` is not a local
            folder; the message says how to load from a folder instead.
    """
    transformers = _import_transformers()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():  # an exported folder: its files must match
            problems = verify_manifest(path)
            if problems:
                raise ValueError(
                    f"{path} does not match its own {MANIFEST_NAME}: {'; '.join(problems[:5])}; "
                    "the folder was changed after export: export it again"
                )
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32
        )
        return from_hf(hf_model, cls=cls)
    how_to = (
        f"To load from a folder instead: on a machine with internet run "
        f"`transformers.AutoModelForCausalLM.from_pretrained({str(name_or_path)!r})"
        f".save_pretrained('some/folder')`, copy the folder here, then call "
        f"`GPT.from_pretrained('some/folder')`."
    )
    if _hub_offline():
        raise OSError(
            f"{str(name_or_path)!r} is not a local folder and the Hugging Face hub is off "
            f"(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set). Unset it to download. {how_to}"
        )
    try:
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            str(name_or_path), dtype=torch.float32
        )
    except OSError as err:
        raise OSError(
            f"could not load {str(name_or_path)!r} from the Hugging Face hub "
            f"(offline, or no such model): {err}. {how_to}"
        ) from err
    return from_hf(hf_model, cls=cls)


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is in the course extra
        raise ImportError(
            "Hugging Face interop needs transformers: pip install -e '.[course]'"
        ) from err
    return transformers


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def _detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("transformer.h.") or k == "transformer.wte.weight" for k in state_dict):
        return "gpt2"
    if any(k.startswith("model.layers.") or k == "model.embed_tokens.weight" for k in state_dict):
        return "llama"
    if any(k.startswith("gpt_neox.") for k in state_dict):
        return "gpt_neox"
    sample = sorted(state_dict)[:5]
    raise ValueError(
        "state dict is neither a GPT-2 layout (transformer.h.N...), a GPT-NeoX layout "
        f"(gpt_neox.layers.N...) nor a Llama layout (model.layers.N...); first keys: {sample}"
    )


_LAYOUT_NEEDS = {  # layout -> (its name in messages, the settings it needs)
    "gpt2": ("GPT-2", (("pos_emb", "learned"), ("norm", "layernorm"), ("mlp", "gelu"))),
    "gpt_neox": ("GPT-NeoX", (("pos_emb", "rope"), ("norm", "layernorm"), ("mlp", "gelu"))),
    "llama": ("Llama", (("pos_emb", "rope"), ("norm", "rmsnorm"), ("mlp", "swiglu"))),
}


def hf_layout_of(config: GPTConfig) -> str:
    """``"gpt2"``, ``"gpt_neox"`` or ``"llama"``: the ``transformers`` architecture this
    configuration maps to (GPT-NeoX: GPT-2's blocks with rotary positions).

    Raises:
        ValueError: it fits none (the message lists each mismatch).
    """
    reasons = []
    for layout, (title, needs) in _LAYOUT_NEEDS.items():
        misfits = [
            f"{name}={getattr(config, name)!r} ({title} needs {want!r})"
            for name, want in needs
            if getattr(config, name) != want
        ]
        if layout != "llama" and config.num_kv_heads != config.n_head:
            misfits.append(f"n_kv_head={config.n_kv_head} ({title} needs n_head={config.n_head})")
        if not misfits:
            return layout
        reasons.append(f"{title}: " + ", ".join(misfits))
    raise ValueError("this configuration fits no Hugging Face layout. " + ". ".join(reasons))


# ---------------------------------------------------------------------------------------------
# Export: a folder transformers loads without minillm
# ---------------------------------------------------------------------------------------------


def hf_state_dict(hf_model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store for a ``transformers`` model: tied weights once, under the input
    embedding's name (the name ``transformers`` ties the output layer to on loading).

    Returns:
        ``(tensors, aliases)``: aliases maps each dropped name to the name kept.
    """
    state = hf_model.state_dict()
    embed = hf_model.get_input_embeddings().weight
    embed_name = next(name for name, t in state.items() if t.data_ptr() == embed.data_ptr())
    return safefile.dedup_tied(state, prefer=(embed_name,))
