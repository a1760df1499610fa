"""LoRA: low-rank adapters on frozen linear layers, with Hugging Face ``peft``'s file layout.

Taught in lesson 08 (fine-tuning). A :class:`LoRALinear` keeps the pretrained weight ``W``
frozen and learns a rank-``r`` correction ``B A``::

    y = W x + b + (alpha / r) · B A dropout(x)        (rsLoRA: alpha / sqrt(r))

``A`` (r × in) starts Kaiming-uniform and ``B`` (out × r) starts at zero, so at initialisation
the output is exactly the base layer's. :func:`apply_lora` swaps the targeted ``nn.Linear``
modules of any model for :class:`LoRALinear` and freezes everything else; :func:`merge_lora`
folds ``W + (alpha/r) B A`` back into plain ``nn.Linear`` layers (no inference cost).

Tokens added after pretraining (the chat template's ``<|user|>``, ``<|assistant|>``, ``<|end|>``)
have embedding rows the model never learned; frozen under LoRA, they stay as initialised (three
identical mean rows, so the tied output layer cannot even tell ``<|end|>`` from ``<|user|>``).
``apply_lora(..., trainable_token_ids=[...])`` trains those rows only, as peft's
``trainable_token_indices`` does: :class:`TrainableTokens` keeps the embedding frozen and learns
a copy of the chosen rows, and a tied output layer reads the same rows (:class:`TiedTokensHead`).

The parameter names (``lora_A``, ``lora_B``, ``scaling``), the operation order and the saved
files (:func:`save_adapter`: ``adapter_config.json`` + ``adapter_model.safetensors``) follow
``peft``, so an adapter trained here loads with ``peft.PeftModel.from_pretrained`` on the
:meth:`minillm.model.GPT.to_hf` export (the module names are the same).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "TrainableTokens",
    "TiedTokensHead",
    "apply_lora",
    "merge_lora",
    "lora_state_dict",
    "count_parameters",
]


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
        trainable_token_ids: rows of the token embedding to train as well (new special tokens),
            every other row frozen; peft's ``trainable_token_indices``. None: none.
        token_module: the name of the token embedding (an ``nn.Embedding``).
    """

    targets: list[str] = field(default_factory=lambda: ["c_attn"])
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False
    trainable_token_ids: list[int] | None = None
    token_module: str = "transformer.wte"

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
        ids = self.trainable_token_ids
        if ids is not None:
            ids = list(ids)
            if not ids or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
            ):
                raise ValueError(
                    f"LoRAConfig.trainable_token_ids must be non-negative ints, got {ids!r}"
                )
            if len(set(ids)) != len(ids):
                raise ValueError(f"LoRAConfig.trainable_token_ids has duplicates: {ids!r}")
            self.trainable_token_ids = ids

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


class TrainableTokens(nn.Module):
    """An ``nn.Embedding`` with rows ``token_ids`` trained and every other row frozen.

    The trained rows live in ``trainable_tokens_delta`` (peft's name; it holds the rows' values,
    starting as a copy of them, not a difference), written over the frozen table at each call:
    the gradient reaches those rows only, and the optimiser never sees the rest of the table.

    Args:
        base: the embedding; its weight is frozen.
        token_ids: the rows to train (distinct, inside the vocabulary).
    """

    def __init__(self, base: nn.Embedding, token_ids: list[int]) -> None:
        super().__init__()
        if not isinstance(base, nn.Embedding):
            raise TypeError(f"TrainableTokens wraps an nn.Embedding, got {type(base).__name__}")
        bad = [i for i in token_ids if not 0 <= i < base.num_embeddings]
        if bad:
            raise ValueError(
                f"trainable token ids {bad} are outside the embedding's {base.num_embeddings} rows"
            )
        self.base = base
        base.weight.requires_grad_(False)
        ids = torch.tensor(token_ids, dtype=torch.long, device=base.weight.device)
        self.register_buffer("token_ids", ids, persistent=False)
        self.trainable_tokens_delta = nn.Parameter(base.weight.detach()[ids].clone())

    @property
    def weight(self) -> torch.Tensor:
        """The table in use: the frozen rows, with the trained rows written over theirs."""
        return self.base.weight.index_copy(0, self.token_ids, self.trainable_tokens_delta)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(idx, self.weight, self.base.padding_idx)

    def extra_repr(self) -> str:
        return f"token_ids={self.token_ids.tolist()}"


class TiedTokensHead(nn.Module):
    """An output layer tied to a :class:`TrainableTokens` embedding: logits use its trained rows.

    The embedding is held in a list, not as a submodule, so its parameter is registered (and
    counted, saved, optimised) once, by the embedding.
    """

    def __init__(self, base: nn.Linear, tokens: TrainableTokens) -> None:
        super().__init__()
        self.base = base
        self._tokens = [tokens]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._tokens[0]
        # The frozen table scores every token (no weight gradient: the big matmul of the
        # backward pass is skipped, as in plain LoRA); the trained rows' scores replace theirs.
        logits = nn.functional.linear(x, tokens.base.weight, self.base.bias)
        bias = None if self.base.bias is None else self.base.bias[tokens.token_ids]
        logits[..., tokens.token_ids] = nn.functional.linear(x, tokens.trainable_tokens_delta, bias)
        return logits


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
    gradients trains the adapters only (and the rows ``trainable_token_ids`` of the token
    embedding, if given: see :class:`TrainableTokens`; an output layer tied to the embedding
    then reads the same rows). The config is kept as ``model.lora_config``.

    Args:
        model: any module (a :class:`minillm.model.GPT`, a ``transformers`` model with
            ``nn.Linear`` layers, ...).
        config: what to adapt; or pass its fields as keywords (``targets=, r=, alpha=, ...``).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: no module matches the targets, a target is not an ``nn.Linear``, a
            target's weight is tied to another module, the model already has adapters, or
            ``token_module`` is not an ``nn.Embedding`` holding ``trainable_token_ids``.
    """
    if config is None:
        config = LoRAConfig(**kwargs)
    elif kwargs or not isinstance(config, LoRAConfig):
        raise TypeError("pass either a LoRAConfig or its fields as keywords, not both")
    if any(isinstance(m, (LoRALinear, TrainableTokens)) for m in model.modules()):
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
    embedding, heads = _token_embedding(model, config) if config.trainable_token_ids else (None, [])
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        _set_module(
            model, name, LoRALinear(base, config.r, config.alpha, config.dropout, config.rslora)
        )
    if embedding is not None:
        tokens = TrainableTokens(embedding, config.trainable_token_ids)
        _set_module(model, config.token_module, tokens)
        for name in heads:
            _set_module(model, name, TiedTokensHead(model.get_submodule(name), tokens))
    model.lora_config = config
    return model


def _token_embedding(model: nn.Module, config: LoRAConfig) -> tuple[nn.Embedding, list[str]]:
    """The embedding ``config.token_module`` and the names of the linear layers tied to it."""
    try:
        embedding = model.get_submodule(config.token_module)
    except AttributeError:
        embedding = None
    if not isinstance(embedding, nn.Embedding):
        raise ValueError(
            f"token_module {config.token_module!r} is not an nn.Embedding of the model "
            f"(found {type(embedding).__name__}); trainable_token_ids needs the token embedding"
        )
    bad = [i for i in config.trainable_token_ids or [] if i >= embedding.num_embeddings]
    if bad:
        raise ValueError(
            f"trainable token ids {bad} are outside the embedding's {embedding.num_embeddings} rows"
        )
    heads = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.weight is embedding.weight
    ]
    return embedding, heads


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by the equivalent plain ``nn.Linear``, in place.

    Trained token rows (:class:`TrainableTokens`) are written into a plain ``nn.Embedding``,
    and an output layer tied to it is tied to the new one. The merged layers are trainable again
    (``requires_grad=True``), as in a fresh model.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    token_names = [n for n, m in model.named_modules() if isinstance(m, TrainableTokens)]
    if not names and not token_names:
        raise ValueError("the model has no LoRA adapters to merge")
    for name in names:
        _set_module(model, name, model.get_submodule(name).merged())
    merged_tokens = {}
    for name in token_names:
        tokens = model.get_submodule(name)
        old = tokens.base
        new = nn.Embedding(
            old.num_embeddings,
            old.embedding_dim,
            padding_idx=old.padding_idx,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(tokens.weight)
        merged_tokens[id(tokens)] = new
        _set_module(model, name, new)
    for name, module in list(model.named_modules()):
        if isinstance(module, TiedTokensHead):
            head = module.base
            head.weight = merged_tokens[id(module._tokens[0])].weight  # tied again
            _set_module(model, name, head)
    for param in model.parameters():
        param.requires_grad_(True)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only: ``{"<module>.lora_A.weight": A, "<module>.lora_B.weight": B}``.

    Trained token rows are ``"<embedding>.token_adapter.trainable_tokens_delta"`` (peft's key).
    """
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{name}.lora_A.weight"] = module.lora_A.weight.detach()
            out[f"{name}.lora_B.weight"] = module.lora_B.weight.detach()
        elif isinstance(module, TrainableTokens):
            out[f"{name}.token_adapter.trainable_tokens_delta"] = (
                module.trainable_tokens_delta.detach()
            )
    if not out:
        raise ValueError("the model has no LoRA adapters")
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, each tensor counted once (tied weights too)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def describe(config: LoRAConfig) -> dict[str, Any]:
    """The config as a plain dict (for logs and reports)."""
    return {**asdict(config), "scaling": config.scaling}
