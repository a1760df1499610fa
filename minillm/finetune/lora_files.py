"""LoRA adapters on disk (lesson 08), in peft's layout: ``adapter_config.json`` and
``adapter_model.safetensors``, which ``peft.PeftModel.from_pretrained`` loads (GPT-NeoX naming for
a model with rotary positions).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm.finetune.lora import LoRAConfig, apply_lora, lora_state_dict
from minillm.model.hf_layouts import module_name_from_gpt_neox, module_name_to_gpt_neox, qkv_rows

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "save_adapter", "load_adapter"]


ADAPTER_CONFIG = "adapter_config.json"


ADAPTER_WEIGHTS = "adapter_model.safetensors"


_PEFT_PREFIX = "base_model.model."


def _peft_config(config: LoRAConfig, fan_in_fan_out: bool) -> dict[str, Any]:
    """The ``adapter_config.json`` fields peft reads (it fills every other field by default)."""
    tokens: list[int] | dict[str, list[int]] | None = config.trainable_token_ids
    input_embeddings = ("transformer.wte", "gpt_neox.embed_in")  # GPT-2's and GPT-NeoX's names
    if tokens is not None and config.token_module not in input_embeddings:
        tokens = {config.token_module: tokens}  # a list means "the input embedding" to peft
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.rslora,
        "target_modules": list(config.targets),
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "trainable_token_indices": tokens,
    }


def save_adapter(
    model: nn.Module, folder: str | os.PathLike, *, fan_in_fan_out: bool = True
) -> Path:
    """Write the adapters in peft's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

    Tensor names are ``base_model.model.<module>.lora_A.weight`` (peft drops the adapter name
    on save), named for the model :meth:`minillm.model.GPT.to_hf` exports: GPT-2's names are
    minillm's, and ``fan_in_fan_out=True`` is what peft records for GPT-2's ``Conv1D`` layers (A
    and B have the same shapes either way; only the merged base weight is transposed). A model
    with rotary positions exports as GPT-NeoX: its module names are renamed, the B rows of the
    fused q/k/v layer regrouped per head as GPT-NeoX stores them, and ``fan_in_fan_out`` is
    False (``nn.Linear`` layers).

    Returns:
        The folder. Both files are written atomically.
    """
    from safetensors.torch import save_file

    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoRAConfig):
        raise ValueError("the model has no lora_config: build its adapters with apply_lora")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = lora_state_dict(model)
    n_head = _neox_heads(model)
    if n_head is not None:
        tensors = _to_neox(tensors, n_head)
        adapted = sorted({k.rsplit(".lora_", 1)[0] for k in tensors if ".lora_" in k})
        config = LoRAConfig(
            **{
                **asdict(config),
                "targets": adapted,
                "token_module": module_name_to_gpt_neox(config.token_module),
            }
        )
        fan_in_fan_out = False
    tensors = {_PEFT_PREFIX + k: v.contiguous().clone() for k, v in tensors.items()}
    _atomic(folder / ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p)))
    text = json.dumps(_peft_config(config, fan_in_fan_out), indent=2) + "\n"
    _atomic(folder / ADAPTER_CONFIG, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return folder


def _neox_heads(model: nn.Module) -> int | None:
    """The head count when ``model`` exports as GPT-NeoX (GPT-2 blocks, RoPE), else None."""
    config = getattr(model, "config", None)
    fields = ("pos_emb", "norm", "mlp", "n_head")
    if config is None or not all(hasattr(config, f) for f in fields):
        return None
    gpt2_blocks = config.norm == "layernorm" and config.mlp == "gelu"
    return config.n_head if gpt2_blocks and config.pos_emb == "rope" else None


def _to_neox(tensors: dict[str, torch.Tensor], n_head: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tensors.items():
        module, _, leaf = key.partition(".lora_") if ".lora_" in key else key.partition(".token_")
        joiner = ".lora_" if ".lora_" in key else ".token_"
        if module.endswith("attn.c_attn") and leaf.startswith("B."):
            value = qkv_rows(value, n_head, to_neox=True)
        out[module_name_to_gpt_neox(module) + joiner + leaf] = value
    return out


def _from_neox(tensors: dict[str, torch.Tensor], n_head: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tensors.items():
        joiner = ".lora_" if ".lora_" in key else ".token_"
        module, _, leaf = key.partition(joiner)
        ours = module_name_from_gpt_neox(module)
        if ours.endswith("attn.c_attn") and leaf.startswith("B."):
            value = qkv_rows(value, n_head, to_neox=False)
        out[ours + joiner + leaf] = value
    return out


def load_adapter(model: nn.Module, folder: str | os.PathLike) -> nn.Module:
    """Add the adapters saved in ``folder`` (by :func:`save_adapter` or peft) to ``model``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not a LoRA adapter, or its tensors do not fit the model (all listed).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} does not exist: not an adapter folder")
    raw = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if raw.get("peft_type") != "LORA":
        raise ValueError(
            f"{folder / ADAPTER_CONFIG}: peft_type is {raw.get('peft_type')!r}, not 'LORA'"
        )
    tokens = raw.get("trainable_token_indices")
    token_module = "transformer.wte"
    if isinstance(tokens, dict):
        if len(tokens) != 1:
            raise ValueError(f"{folder / ADAPTER_CONFIG}: one token embedding only, got {tokens}")
        ((token_module, tokens),) = tokens.items()
    targets = list(raw["target_modules"])
    neox = any(t.startswith("gpt_neox.") for t in targets)  # saved for a GPT-NeoX export
    if neox:
        targets = [module_name_from_gpt_neox(t) for t in targets]
        if token_module.startswith("gpt_neox."):
            token_module = module_name_from_gpt_neox(token_module)
    config = LoRAConfig(
        targets=targets,
        r=int(raw["r"]),
        alpha=float(raw["lora_alpha"]),
        dropout=float(raw.get("lora_dropout", 0.0)),
        rslora=bool(raw.get("use_rslora", False)),
        trainable_token_ids=None if tokens is None else [int(i) for i in tokens],
        token_module=token_module,
    )
    apply_lora(model, config)
    saved = {
        k.removeprefix(_PEFT_PREFIX): v for k, v in load_file(str(folder / ADAPTER_WEIGHTS)).items()
    }
    saved = {_without_adapter_name(k): v for k, v in saved.items()}
    if neox:
        saved = _from_neox(saved, model.config.n_head)
    expected = lora_state_dict(model)
    problems = sorted(set(expected) ^ set(saved))
    problems += [
        f"{k}: expected {tuple(v.shape)}, got {tuple(saved[k].shape)}"
        for k, v in expected.items()
        if k in saved and saved[k].shape != v.shape
    ]
    if problems:
        raise ValueError(f"adapter in {folder} does not fit the model: {problems[:8]}")
    with torch.no_grad():
        for key, value in expected.items():
            value.copy_(saved[key])
    return model


def _without_adapter_name(key: str) -> str:
    """``...lora_A.default.weight`` -> ``...lora_A.weight`` (peft's in-memory names)."""
    for part in (".lora_A", ".lora_B", ".trainable_tokens_delta"):
        key = key.replace(f"{part}.default", part)
    return key


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
