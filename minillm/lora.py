"""LoRA: low-rank adapters on frozen linear layers, with Hugging Face ``peft``'s file layout.

Taught in lesson 08 (fine-tuning). A :class:`LoRALinear` keeps the pretrained weight ``W``
frozen and learns a rank-``r`` correction ``B A``::

    y = W x + b + (alpha / r) · B A dropout(x)        (rsLoRA: alpha / sqrt(r))

``A`` (r × in) starts Kaiming-uniform and ``B`` (out × r) starts at zero, so at initialisation
the output is exactly the base layer's. :func:`apply_lora` swaps the targeted ``nn.Linear``
modules of any model for :class:`LoRALinear` and freezes everything else; :func:`merge_lora`
folds ``W + (alpha/r) B A`` back into plain ``nn.Linear`` layers (no inference cost).

The parameter names (``lora_A``, ``lora_B``, ``scaling``), the operation order and the saved
files (:func:`save_adapter`: ``adapter_config.json`` + ``adapter_model.safetensors``) follow
``peft``, so an adapter trained here loads with ``peft.PeftModel.from_pretrained`` on the
:meth:`minillm.model.GPT.to_hf` export (the module names are the same).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "merge_lora",
    "lora_state_dict",
    "save_adapter",
    "load_adapter",
    "count_parameters",
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoRAConfig:
    """What :func:`apply_lora` adapts and how.

    Attributes:
        targets: module-name suffixes to adapt (``"c_attn"`` matches every
            ``transformer.h.N.attn.c_attn``), matched as ``peft``'s ``target_modules`` list:
            the full name equals the target or ends with ``"." + target``.
        r: rank of the correction.
        alpha: scale numerator; the correction is multiplied by ``alpha / r``.
        dropout: dropout on the adapter's input (not on the frozen path).
        rslora: scale by ``alpha / sqrt(r)`` instead (rank-stabilised LoRA, Kalajdzievski 2023),
            so the update's size does not shrink as ``r`` grows.
    """

    targets: list[str] = field(default_factory=lambda: ["c_attn"])
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(
                f"LoRAConfig.targets must be non-empty module names, got {self.targets!r}"
            )
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRAConfig.r must be a positive int, got {self.r!r}")
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or self.alpha <= 0
        ):
            raise ValueError(f"LoRAConfig.alpha must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def scaling(self) -> float:
        """The factor on ``B A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def matches(self, name: str) -> bool:
        """Whether the module called ``name`` is a target (peft's suffix rule)."""
        return any(name == t or name.endswith("." + t) for t in self.targets)


class LoRALinear(nn.Module):
    """``base(x) + B(A(dropout(x))) · scaling`` around a frozen ``nn.Linear``.

    Args:
        base: the pretrained layer; its parameters are frozen (``requires_grad=False``).
        r: rank; ``alpha``, ``dropout``, ``rslora``: see :class:`LoRAConfig`.
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        rslora: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        config = LoRAConfig(targets=["base"], r=r, alpha=alpha, dropout=dropout, rslora=rslora)
        self.base = base
        for param in base.parameters():
            param.requires_grad_(False)
        self.r, self.alpha, self.rslora = r, float(alpha), rslora
        self.scaling = config.scaling
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = base.weight
        self.lora_A = nn.Linear(
            base.in_features, r, bias=False, device=weight.device, dtype=weight.dtype
        )
        self.lora_B = nn.Linear(
            r, base.out_features, bias=False, device=weight.device, dtype=weight.dtype
        )
        self.reset_lora()

    def reset_lora(self) -> None:
        """A Kaiming-uniform (as ``nn.Linear`` and peft), B zeros: the adapter starts as a no-op."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same order of operations as peft, so the two agree bit for bit on the same weights.
        return self.base(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update ``scaling · B A`` (out × in) that merging adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (up to rounding)."""
        base = self.base
        out = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}, rslora={self.rslora}"


def _shared_weight_names(model: nn.Module) -> set[str]:
    """Names of modules whose weight tensor is also used by another module (weight tying)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    return {n for names in owners.values() if len(names) > 1 for n in names}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(model: nn.Module, config: LoRAConfig | None = None, **kwargs: Any) -> nn.Module:
    """Wrap every targeted ``nn.Linear`` of ``model`` in :class:`LoRALinear`, in place.

    Every other parameter is frozen, so an optimiser over the parameters that require
    gradients trains the adapters only. The config is kept as ``model.lora_config``.

    Args:
        model: any module (a :class:`minillm.model.GPT`, a ``transformers`` model with
            ``nn.Linear`` layers, ...).
        config: what to adapt; or pass its fields as keywords (``targets=, r=, alpha=, ...``).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: no module matches the targets, a target is not an ``nn.Linear``, a
            target's weight is tied to another module, or the model already has adapters.
    """
    if config is None:
        config = LoRAConfig(**kwargs)
    elif kwargs or not isinstance(config, LoRAConfig):
        raise TypeError("pass either a LoRAConfig or its fields as keywords, not both")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters; merge_lora it first")
    names = [n for n, _ in model.named_modules() if n and config.matches(n)]
    if not names:
        raise ValueError(
            f"no module matches targets {config.targets}; module names look like "
            f"{[n for n, _ in model.named_modules() if n][:6]}"
        )
    tied = _shared_weight_names(model)
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"target {name!r} is a {type(module).__name__}, not an nn.Linear")
        if name in tied:
            raise ValueError(
                f"target {name!r} shares its weight with another module (weight tying); merging "
                "an adapter into it would change both. Pick other targets."
            )
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        _set_module(
            model, name, LoRALinear(base, config.r, config.alpha, config.dropout, config.rslora)
        )
    model.lora_config = config
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by the equivalent plain ``nn.Linear``, in place.

    The merged layers are trainable again (``requires_grad=True``), as in a fresh model.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("the model has no LoRA adapters to merge")
    for name in names:
        _set_module(model, name, model.get_submodule(name).merged())
    for param in model.parameters():
        param.requires_grad_(True)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only: ``{"<module>.lora_A.weight": A, "<module>.lora_B.weight": B}``."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{name}.lora_A.weight"] = module.lora_A.weight.detach()
            out[f"{name}.lora_B.weight"] = module.lora_B.weight.detach()
    if not out:
        raise ValueError("the model has no LoRA adapters")
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, each tensor counted once (tied weights too)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _peft_config(config: LoRAConfig, fan_in_fan_out: bool) -> dict[str, Any]:
    """The ``adapter_config.json`` fields peft reads (it fills every other field by default)."""
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
    }


def save_adapter(
    model: nn.Module, folder: str | os.PathLike, *, fan_in_fan_out: bool = True
) -> Path:
    """Write the adapters in peft's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

    Tensor names are ``base_model.model.<module>.lora_A.weight`` (peft drops the adapter name
    on save). ``fan_in_fan_out=True`` is what peft records for GPT-2's ``Conv1D`` layers, the
    layers :meth:`minillm.model.GPT.to_hf` exports these ``nn.Linear`` ones as (A and B have
    the same shapes either way; only the merged base weight is transposed).

    Returns:
        The folder. Both files are written atomically.
    """
    from safetensors.torch import save_file

    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoRAConfig):
        raise ValueError("the model has no lora_config: build its adapters with apply_lora")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {_PEFT_PREFIX + k: v.contiguous().clone() for k, v in lora_state_dict(model).items()}
    _atomic(folder / ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p)))
    text = json.dumps(_peft_config(config, fan_in_fan_out), indent=2) + "\n"
    _atomic(folder / ADAPTER_CONFIG, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return folder


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
    config = LoRAConfig(
        targets=list(raw["target_modules"]),
        r=int(raw["r"]),
        alpha=float(raw["lora_alpha"]),
        dropout=float(raw.get("lora_dropout", 0.0)),
        rslora=bool(raw.get("use_rslora", False)),
    )
    apply_lora(model, config)
    saved = {
        k.removeprefix(_PEFT_PREFIX): v for k, v in load_file(str(folder / ADAPTER_WEIGHTS)).items()
    }
    saved = {
        k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): v
        for k, v in saved.items()
    }
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


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe(config: LoRAConfig) -> dict[str, Any]:
    """The config as a plain dict (for logs and reports)."""
    return {**asdict(config), "scaling": config.scaling}
