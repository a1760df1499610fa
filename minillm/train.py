"""Pretraining: the training loop, its schedule, checkpoints that resume exactly, the course model.

Taught in lesson 05 (pretraining); lessons 06 (distributed) and 07 (mixed precision) teach the
switches that are already here: ``dtype``, ``compile`` and rank awareness under ``torchrun``.

The pieces, each usable on its own:

- :class:`TrainConfig`: every setting of a run, validated (unknown keys and wrong types are errors).
- :func:`get_lr`: linear warmup then cosine decay; :func:`configure_optimizer`: AdamW with weight
  decay on matrices only.
- :func:`estimate_loss`: mean loss over fixed batches of a split.
- :func:`save_checkpoint` / :func:`load_checkpoint`: one safetensors file holding the model, the
  optimizer, the step, every random generator and the data position, with JSON for the rest, so
  loading never executes pickled code.
- :func:`train`: the loop (accumulation, clipping, evaluation, logging, checkpoints, resume).
- :func:`read_log` / :func:`plot_log`: the JSONL metrics a run appends.
- :func:`course_model`: the course's pretrained model and tokenizer, trained once and cached.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minillm.utils import auto_device, measure_matmul_gflops, seed_everything

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.jsonl"
TOKENIZER_NAME = "tokenizer.bpe"
CACHE_ENV_VAR = "MINILLM_CACHE"
"""Environment variable naming the cache folder for trained course artefacts."""

_FORMAT = "minillm-checkpoint"
_FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a help text (shown by ``minillm train --help``)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of a training run. Unknown keys and wrong types raise ``ValueError``/``TypeError``.

    Build one directly, from a dict (:meth:`from_dict`) or from a TOML/JSON file
    (:meth:`from_file`, e.g. ``configs/course.toml``).
    """

    data_dir: str = _setting(
        "data/course", "folder written by `minillm prepare`: train.bin, val.bin, tokenizer.bpe"
    )
    out_dir: str = _setting("runs/course", "folder for the checkpoint, the log and the tokenizer")
    model_preset: str = _setting("course", "GPTConfig preset the model starts from")
    model_overrides: dict[str, Any] = _setting({}, "GPTConfig fields that replace the preset's")
    max_steps: int = _setting(600, "optimizer steps in the whole run (the schedule ends here)")
    batch_size: int = _setting(16, "sequences per micro-batch (per process)")
    block_size: int | None = _setting(None, "tokens per sequence; None: the model's block_size")
    grad_accum_steps: int = _setting(1, "micro-batches summed into one optimizer step")
    learning_rate: float = _setting(3e-3, "peak learning rate, reached after the warmup")
    min_lr: float | None = _setting(None, "learning rate at the end of the cosine; None: peak/10")
    warmup_steps: int = _setting(30, "steps of linear warmup from 0 to the peak learning rate")
    weight_decay: float = _setting(0.1, "AdamW weight decay, applied to matrices only")
    beta1: float = _setting(0.9, "AdamW beta1 (momentum of the gradient)")
    beta2: float = _setting(0.95, "AdamW beta2 (momentum of the squared gradient)")
    grad_clip: float = _setting(1.0, "clip the global gradient norm to this; 0 disables")
    eval_interval: int = _setting(100, "evaluate on the validation split every this many steps")
    eval_batches: int = _setting(10, "batches averaged for each evaluation")
    log_interval: int = _setting(10, "append training metrics to the log every this many steps")
    checkpoint_interval: int = _setting(
        100, "save a checkpoint every this many steps; 0: at the end"
    )
    dtype: str = _setting("float32", "float32, bfloat16 (autocast) or float16 (CUDA, loss scaling)")
    compile: bool = _setting(False, "run the model through torch.compile")
    device: str = _setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    seed: int = _setting(1337, "seed for the model's initialisation and the batch order")
    progress: bool = _setting(True, "show a progress bar (loss, tokens/s, MFU)")
    overwrite: bool = _setting(False, "start afresh even if out_dir already holds a checkpoint")
    peak_gflops: float | None = _setting(
        None, "matmul peak used for MFU, GFLOP/s; None: measured at the start"
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping, rejecting keys that are not settings."""
        if not isinstance(values, dict):
            raise TypeError(f"a training config must be a mapping, got {type(values).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown training setting(s) {unknown}; valid settings: {', '.join(valid)}"
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a ``.toml`` or ``.json`` config file; keyword arguments replace its values."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .toml or .json")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed (validated like a new config)."""
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a simple type hint (int, float, str, bool, dict, X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int is a fine float (3 for 3.0)
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_types(config: TrainConfig) -> None:
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _type_ok(value, hints[f.name]):
            expected = str(hints[f.name]).replace("typing.", "")
            raise TypeError(
                f"training setting {f.name!r} must be {expected}, got {value!r} "
                f"({type(value).__name__})"
            )
        expects_float = hints[f.name] is float or hints[f.name] == (float | None)
        if expects_float and isinstance(value, int):
            object.__setattr__(config, f.name, float(value))


def _check_values(config: TrainConfig) -> None:
    positive = ("max_steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches")
    for name in (*positive, "log_interval"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("warmup_steps", "checkpoint_interval"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in ("learning_rate", "weight_decay", "grad_clip"):
        if getattr(config, name) < 0 or not math.isfinite(getattr(config, name)):
            raise ValueError(f"{name} must be a finite number >= 0, got {getattr(config, name)}")
    if config.min_lr is not None and not 0 <= config.min_lr <= config.learning_rate:
        raise ValueError(f"min_lr must lie in [0, learning_rate], got {config.min_lr}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(config, name) < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {getattr(config, name)}")
    if config.block_size is not None and config.block_size < 1:
        raise ValueError(f"block_size must be >= 1 or None, got {config.block_size}")
    if config.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {config.dtype!r}")


# ---------------------------------------------------------------------------------------------
# Optimizer, schedule, precision
# ---------------------------------------------------------------------------------------------


def get_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    Warmup rises linearly to ``max_lr`` over ``warmup_steps`` (step 0 already gets a small
    non-zero rate); the cosine then falls from ``max_lr`` to ``min_lr`` at ``max_steps``.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def configure_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    device_type: str = "cpu",
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear and embedding weights) and none elsewhere.

    Biases and normalisation gains are vectors: decaying them toward zero only hurts. The fused
    kernel is used where PyTorch has one (CUDA, CPU), otherwise the multi-tensor ``foreach`` one.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device_type in ("cuda", "cpu")
    kwargs: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **kwargs)


def autocast_context(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``dtype`` on ``device`` (a no-op for float32).

    Raises:
        ValueError: float16 was asked for on a device other than CUDA.
    """
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "float16" and device.type != "cuda":
        raise ValueError(
            f"dtype='float16' needs a CUDA GPU (it relies on loss scaling); on {device.type} "
            "use dtype='bfloat16' or dtype='float32'"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[dtype])


# ---------------------------------------------------------------------------------------------
# Distributed (torchrun) helpers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Read RANK, LOCAL_RANK and WORLD_SIZE as ``torchrun`` sets them."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def _init_distributed(info: DistInfo, device: torch.device) -> None:
    import torch.distributed as dist

    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def _pick_device(name: str, info: DistInfo) -> torch.device:
    device = auto_device(None if name == "auto" else name)
    if device.type == "cuda" and info.enabled and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_split(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map ``<data_dir>/<split>.bin`` written by :func:`minillm.data.pack_tokens`.

    Raises:
        FileNotFoundError: the folder or the split is missing (with the command that makes it).
        ValueError: the split holds no tokens.
    """
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.bin"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {split} split at {path}; make the dataset first with "
            f"`minillm prepare --out-dir {data_dir}` (it writes train.bin, val.bin, test.bin "
            "and tokenizer.bpe)"
        )
    from minillm.data import load_tokens

    tokens = load_tokens(path)
    if len(tokens) == 0:
        raise ValueError(f"the {split} split {path} is empty; re-run `minillm prepare`")
    return tokens


def check_tokens(tokens: Any, block_size: int, name: str) -> None:
    """Raise a clear error when a token sequence cannot yield a single training example."""
    if tokens is None:
        raise ValueError(f"no {name} tokens were given")
    length = len(tokens)
    if length == 0:
        raise ValueError(f"the {name} dataset is empty; it needs at least {block_size + 1} tokens")
    if length < block_size + 1:
        raise ValueError(
            f"the {name} dataset has {length} tokens, fewer than block_size + 1 = "
            f"{block_size + 1} that one example needs; use a smaller block_size or more data"
        )


def shard_for_rank(tokens: Any, info: DistInfo) -> Any:
    """The contiguous slice of ``tokens`` that this rank trains on (all of it on one process)."""
    if not info.enabled:
        return tokens
    size = len(tokens) // info.world_size
    return tokens[info.rank * size : (info.rank + 1) * size]


def batch_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The generator that draws the training batches of ``rank`` in a run seeded with ``seed``.

    Each rank gets its own stream; evaluation uses separate generators, so evaluating never
    changes which batches training sees.
    """
    return torch.Generator().manual_seed(seed + 7919 * (rank + 1))


def _batch(
    tokens: Any, batch_size: int, block_size: int, generator: torch.Generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    from minillm.data import get_batch

    return get_batch(tokens, batch_size, block_size, generator=generator, device=device)


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    tokens: Any,
    *,
    batch_size: int,
    block_size: int,
    batches: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: str = "float32",
) -> float:
    """Mean cross-entropy (nats per token) over ``batches`` random batches of ``tokens``.

    The batches come from their own generator seeded with ``seed``, so every evaluation of a run
    sees the same examples (comparable numbers) and never disturbs the training generators.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with autocast_context(dtype, device):
        for _ in range(batches):
            x, y = _batch(tokens, batch_size, block_size, generator, device)
            _, loss = model(x, y)
            total += loss.float().item()
    model.train(was_training)
    return total / batches


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, or does not fit the model."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the kept checkpoint."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, as plain Python objects and tensors."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    model_config: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    rng_states: list[dict[str, Any]] | None = None
    data_state: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """A GPT with the checkpoint's configuration and weights, in eval mode."""
        from minillm.model import GPT, GPTConfig

        if self.model_config is None:
            raise CheckpointError(f"{self.path} holds no model configuration to build from")
        model = GPT(GPTConfig(**self.model_config))
        load_model_state(model, self)
        return model.eval()


def _model_config_dict(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    if config is not None and dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return None


def _unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Drop tensors that share storage with an earlier one (tied weights); return the aliases."""
    seen: dict[tuple[int, int, tuple], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor
    return unique, aliases


def _rng_snapshot(generator: torch.Generator | None) -> dict[str, Any]:
    """Every random generator this process uses: tensors and JSON-able parts."""
    np_state = np.random.get_state()
    snapshot: dict[str, Any] = {
        "python": _to_jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *(_to_jsonable(v) for v in np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        snapshot["cuda"] = torch.cuda.get_rng_state()
    if generator is not None:
        snapshot["batch"] = generator.get_state()
    return snapshot


def _restore_rng(snapshot: dict[str, Any], generator: torch.Generator | None) -> None:
    random.setstate(_to_tuple(snapshot["python"]))
    name, keys, *rest = snapshot["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(snapshot["torch"])
    if "cuda" in snapshot and torch.cuda.is_available():
        torch.cuda.set_rng_state(snapshot["cuda"])
    if generator is not None and "batch" in snapshot:
        generator.set_state(snapshot["batch"])


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    train_config: TrainConfig | dict[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    data_state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, then a rename.

    Tensors go into a safetensors file; everything else (configs, step, optimizer
    hyper-parameters, Python/NumPy random states) into JSON in its header. A crash while
    writing leaves the previous checkpoint untouched.

    Args:
        path: the ``.safetensors`` file to write.
        model: the bare model (not wrapped by DDP or ``torch.compile``).
        step: optimizer steps completed.
        optimizer, scaler: saved when given, so training resumes exactly.
        train_config: the run's settings.
        rng_states: one entry per rank, from the training loop (default: this process's).
        data_state, metrics: small JSON-able dicts (data position, last losses).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    unique, aliases = _unique_tensors(model.state_dict())
    tensors = {f"model/{name}": params[name] for name in unique}
    header: dict[str, Any] = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "step": int(step),
        "model_config": _model_config_dict(model),
        "model_aliases": aliases,
        "model_names": list(params),
        "train_config": (
            train_config.to_dict() if isinstance(train_config, TrainConfig) else train_config
        ),
        "data": data_state or {},
        "metrics": metrics or {},
    }
    if optimizer is not None:
        header["optimizer"] = _pack_optimizer(optimizer.state_dict(), tensors)
    if scaler is not None and scaler.is_enabled():
        header["scaler"] = _to_jsonable(scaler.state_dict())
    rng_states = rng_states if rng_states is not None else [_rng_snapshot(None)]
    header["rng"] = []
    for rank, snapshot in enumerate(rng_states):
        plain = {}
        for key, value in snapshot.items():
            if isinstance(value, torch.Tensor):
                tensors[f"rng/{rank}/{key}"] = value.cpu().contiguous()
            else:
                plain[key] = value
        header["rng"].append(plain)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"minillm": json.dumps(header)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _pack_optimizer(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": _to_jsonable(state["param_groups"]), "scalars": scalars}


def _unpack_optimizer(packed: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = tensor
    for index, entries in packed.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in packed["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`. No pickled code is executed.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is truncated, corrupt, or not a minillm checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {err}. "
            "It was left as it is; point to another checkpoint or train again."
        ) from err
    try:
        header = json.loads(metadata["minillm"])
        if header.get("format") != _FORMAT:
            raise KeyError("format")
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path} is a safetensors file but not a minillm checkpoint (no valid 'minillm' "
            "header); expected a file written by minillm.train.save_checkpoint"
        ) from err
    model_state = {
        name.removeprefix("model/"): t for name, t in tensors.items() if name.startswith("model/")
    }
    for alias, target in header["model_aliases"].items():
        model_state[alias] = model_state[target]
    missing = [name for name in header["model_names"] if name not in model_state]
    if missing:
        raise CheckpointError(f"{path} lacks model tensors {missing[:5]}: the file is damaged")
    rng_states = []
    for rank, plain in enumerate(header.get("rng", [])):
        snapshot = dict(plain)
        prefix = f"rng/{rank}/"
        for name, tensor in tensors.items():
            if name.startswith(prefix):
                snapshot[name.removeprefix(prefix)] = tensor.cpu()
        rng_states.append(snapshot)
    optimizer_state = (
        _unpack_optimizer(header["optimizer"], tensors) if "optimizer" in header else None
    )
    return Checkpoint(
        path=path,
        step=header["step"],
        model_state={name: model_state[name] for name in header["model_names"]},
        model_config=header.get("model_config"),
        train_config=header.get("train_config"),
        optimizer_state=optimizer_state,
        scaler_state=header.get("scaler"),
        rng_states=rng_states or None,
        data_state=header.get("data", {}),
        metrics=header.get("metrics", {}),
    )


def load_model_state(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Copy the checkpoint's weights into ``model`` after checking that every shape matches.

    Raises:
        CheckpointError: the checkpoint was saved from a model of another shape; the message
            lists the differences and the checkpoint's model configuration.
    """
    expected = model.state_dict()
    problems = []
    for name, tensor in expected.items():
        if name not in checkpoint.model_state:
            problems.append(f"{name} is missing from the checkpoint")
        elif tuple(checkpoint.model_state[name].shape) != tuple(tensor.shape):
            problems.append(
                f"{name} has shape {tuple(checkpoint.model_state[name].shape)} in the checkpoint "
                f"but {tuple(tensor.shape)} in this model"
            )
    problems += [
        f"{name} is in the checkpoint but not in this model"
        for name in checkpoint.model_state
        if name not in expected
    ]
    if problems:
        shown = "; ".join(problems[:6]) + (
            f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        )
        raise CheckpointError(
            f"{checkpoint.path} was saved from a model of a different shape: {shown}. "
            f"The checkpoint's model config is {checkpoint.model_config}; build the model from it "
            "(Checkpoint.build_model()) or train into another out_dir."
        )
    model.load_state_dict(checkpoint.model_state)


# ---------------------------------------------------------------------------------------------
# Metrics log
# ---------------------------------------------------------------------------------------------


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's JSONL log (``log.jsonl`` in its ``out_dir``, or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(path: Path, last_step: int) -> None:
    """Keep only the records up to ``last_step`` (a resumed run rewrites what follows)."""
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if r.get("step", 0) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def plot_log(path_or_records: str | Path | list[dict[str, Any]], ax=None):
    """Plot training and validation loss against the step; returns the matplotlib Axes."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is in the course extra
        raise ImportError("plot_log needs matplotlib: pip install 'minillm[course]'") from err
    records = path_or_records if isinstance(path_or_records, list) else read_log(path_or_records)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval"]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train (batch)", alpha=0.7)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    step: int
    history: list[dict[str, Any]]
    val_loss: float | None
    checkpoint_path: Path | None
    out_dir: Path
    seconds: float

    @property
    def train_losses(self) -> list[float]:
        return [r["loss"] for r in self.history if r.get("kind") == "step"]


def build_model(config: TrainConfig, vocab_size: int | None) -> nn.Module:
    """The GPT named by ``config.model_preset`` with ``config.model_overrides`` applied."""
    from minillm.model import GPT, GPTConfig

    overrides = dict(config.model_overrides)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    return GPT(GPTConfig.preset(config.model_preset, **overrides))


def _vocab_size_of(data_dir: Path) -> int | None:
    """The vocabulary size recorded by ``minillm prepare`` (None when there is no record)."""
    meta = data_dir / "meta.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("vocab_size")
    return None


def _flops_per_token(model: nn.Module) -> float:
    counter = getattr(model, "flops_per_token", None)
    if callable(counter):
        return float(counter())
    return 6.0 * sum(p.numel() for p in model.parameters())


def _model_block_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "block_size", None)


class _Run:
    """State of one training run; :func:`train` drives it. Split out to keep each step short."""

    def __init__(self, config: TrainConfig, model, train_tokens, val_tokens, resume, info):
        self.config = config
        self.info = info
        self.device = _pick_device(config.device, info)
        self.ctx = autocast_context(config.dtype, self.device)  # float16 on CPU fails here
        self.out_dir = Path(config.out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.log_path = self.out_dir / LOG_NAME
        checkpoint = self._checkpoint_to_resume(resume)

        vocab_size = None
        if train_tokens is None:
            data_dir = Path(config.data_dir)
            train_tokens = load_split(data_dir, "train")
            val_tokens = load_split(data_dir, "val") if val_tokens is None else val_tokens
            vocab_size = _vocab_size_of(data_dir)
        if val_tokens is None:
            raise ValueError("train_tokens were given without val_tokens; pass both")
        if model is None:
            seed_everything(config.seed)  # the same initial weights on every rank and every run
            model = build_model(config, vocab_size)
        self.model = model.to(self.device)
        self.block_size = config.block_size or _model_block_size(model)
        if self.block_size is None:
            raise ValueError("block_size is None and the model has no config.block_size; set it")
        model_block = _model_block_size(model)
        if model_block is not None and self.block_size > model_block:
            raise ValueError(
                f"block_size={self.block_size} exceeds the model's block_size={model_block}"
            )
        check_tokens(train_tokens, self.block_size, "train")
        check_tokens(val_tokens, self.block_size, "validation")
        self.train_tokens = shard_for_rank(train_tokens, info)
        check_tokens(self.train_tokens, self.block_size, f"train (rank {info.rank} shard)")
        self.val_tokens = val_tokens

        self.optimizer = configure_optimizer(
            self.model,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device_type=self.device.type,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.dtype == "float16")
        self.generator = batch_generator(config.seed, info.rank)
        self.step = 0
        self.tokens_seen = 0
        self.last_saved_step: int | None = None
        if checkpoint is not None:
            self._restore(checkpoint)
        self.forward_model = self._wrap(self.model)

    def _checkpoint_to_resume(self, resume: bool) -> Checkpoint | None:
        if resume:
            return load_checkpoint(self.ckpt_path)  # clear errors if missing or damaged
        if self.ckpt_path.exists() and not self.config.overwrite:
            raise FileExistsError(
                f"{self.ckpt_path} already holds a checkpoint; resume it (resume=True, "
                "`minillm train --resume`) or start again with overwrite=True (`--overwrite`)"
            )
        return None

    def _restore(self, checkpoint: Checkpoint) -> None:
        load_model_state(self.model, checkpoint)
        if checkpoint.optimizer_state is None:
            raise CheckpointError(f"{checkpoint.path} holds no optimizer state to resume from")
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        if checkpoint.scaler_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint.scaler_state)
        states = checkpoint.rng_states or []
        if len(states) == self.info.world_size:
            _restore_rng(states[self.info.rank], self.generator)
        elif self.info.is_main:
            print(
                f"warning: {checkpoint.path} was saved by {len(states)} process(es), this run "
                f"has {self.info.world_size}; batches after the resume will differ",
                file=sys.stderr,
            )
        self.step = checkpoint.step
        self.tokens_seen = int(checkpoint.data_state.get("tokens_seen", 0))
        self.last_saved_step = checkpoint.step

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.config.compile:
            model = torch.compile(model)
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        return model

    @property
    def tokens_per_step(self) -> int:
        c = self.config
        return c.batch_size * self.block_size * c.grad_accum_steps * self.info.world_size

    def train_step(self) -> float:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns the mean loss."""
        c = self.config
        lr = get_lr(
            self.step,
            max_lr=c.learning_rate,
            min_lr=c.final_lr,
            warmup_steps=c.warmup_steps,
            max_steps=c.max_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.forward_model.train()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(c.grad_accum_steps):
            x, y = _batch(
                self.train_tokens, c.batch_size, self.block_size, self.generator, self.device
            )
            last = micro == c.grad_accum_steps - 1
            sync = contextlib.nullcontext()
            if self.info.enabled and not last:
                sync = self.forward_model.no_sync()  # all-reduce gradients once, at the end
            with sync, self.ctx:
                _, loss = self.forward_model(x, y)
                loss = loss / c.grad_accum_steps  # so the summed gradient is the mean's
            self.scaler.scale(loss).backward()
            loss_sum += loss.detach().float()
        loss_value = _all_mean(loss_sum, self.info).item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            self._fail(f"the loss is {loss_value} at step {self.step + 1}")
        if c.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return loss_value

    def _fail(self, what: str) -> None:
        kept = (
            f"the last good checkpoint {self.ckpt_path} (step {self.last_saved_step}) is kept"
            if self.last_saved_step is not None
            else "no checkpoint was written by this run"
        )
        raise NonFiniteLossError(
            f"training stopped: {what}; {kept}. Try a lower learning_rate, grad_clip > 0, "
            "or dtype='float32'."
        )

    def evaluate(self) -> float:
        c = self.config
        loss = estimate_loss(
            self.model,
            self.val_tokens,
            batch_size=c.batch_size,
            block_size=self.block_size,
            batches=c.eval_batches,
            seed=c.seed,
            device=self.device,
            dtype=c.dtype,
        )
        return loss

    def save(self, metrics: dict[str, Any]) -> None:
        """Save on rank 0 (after gathering every rank's random state); never save bad weights."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self._fail(f"the weights hold NaN or infinity after step {self.step}")
        snapshot = _rng_snapshot(self.generator)
        states = [snapshot]
        if self.info.enabled:
            import torch.distributed as dist

            states = [None] * self.info.world_size
            dist.all_gather_object(states, snapshot)
        if self.info.is_main:
            save_checkpoint(
                self.ckpt_path,
                self.model,
                step=self.step,
                optimizer=self.optimizer,
                scaler=self.scaler,
                train_config=self.config,
                rng_states=states,
                data_state={"tokens_seen": self.tokens_seen, "world_size": self.info.world_size},
                metrics=metrics,
            )
        self.last_saved_step = self.step


def _copy_tokenizer(config: TrainConfig, out_dir: Path) -> None:
    source = Path(config.data_dir) / TOKENIZER_NAME
    target = out_dir / TOKENIZER_NAME
    if source.is_file() and source.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def train(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    train_tokens: Any = None,
    val_tokens: Any = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a model and return it with its history.

    Data comes from ``config.data_dir`` (``train.bin``/``val.bin`` from ``minillm prepare``)
    unless ``train_tokens``/``val_tokens`` (1-D integer arrays) are given; the model is built
    from ``config.model_preset`` unless one is given. Every ``eval_interval`` steps the
    validation loss is measured; every ``log_interval`` steps metrics are appended to
    ``out_dir/log.jsonl``; every ``checkpoint_interval`` steps (and at the end)
    ``out_dir/checkpoint.safetensors`` is replaced atomically. Under ``torchrun`` each rank
    trains on its shard of the data and only rank 0 logs and saves.

    Args:
        config: the run's settings.
        model: a model whose call ``model(x, y)`` returns ``(logits, loss)``.
        train_tokens, val_tokens: token ids to use instead of the files in ``data_dir``.
        resume: continue from ``out_dir/checkpoint.safetensors``; the steps after the resume
            repeat those of an uninterrupted run exactly (bit for bit on a CPU).
        stop_after: stop (saving a checkpoint) once this many steps are done, as if the run
            were interrupted there; the schedule still runs to ``max_steps``.

    Raises:
        FileNotFoundError, ValueError: missing, empty or too-short data; bad settings.
        FileExistsError: ``out_dir`` holds a checkpoint and neither ``resume`` nor
            ``config.overwrite`` is set.
        CheckpointError: the checkpoint to resume is damaged or from another model shape.
        NonFiniteLossError: the loss became NaN or infinite (the last good checkpoint stays).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    info = dist_info()
    started = time.perf_counter()
    _init_distributed(info, _pick_device(config.device, info))
    run = _Run(config, model, train_tokens, val_tokens, resume, info)
    if info.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            _truncate_log(run.log_path, run.step)
        elif run.log_path.exists():
            run.log_path.unlink()  # a fresh run (overwrite=True) starts a fresh log
        _copy_tokenizer(config, run.out_dir)
    history = _loop(run, stop_after)
    seconds = time.perf_counter() - started
    val_losses = [r["val_loss"] for r in history if r.get("kind") == "eval"]
    return TrainResult(
        model=run.model,
        step=run.step,
        history=history,
        val_loss=val_losses[-1] if val_losses else None,
        checkpoint_path=run.ckpt_path if run.last_saved_step is not None else None,
        out_dir=run.out_dir,
        seconds=seconds,
    )


def _progress_bar(run: _Run):
    from tqdm import tqdm

    return tqdm(
        total=run.config.max_steps,
        initial=run.step,
        disable=not (run.config.progress and run.info.is_main),
        desc="train",
        unit="step",
        mininterval=1.0,
        dynamic_ncols=True,
    )


def _loop(run: _Run, stop_after: int | None) -> list[dict[str, Any]]:
    c = run.config
    peak = c.peak_gflops
    if peak is None:
        with torch.random.fork_rng(devices=[]):  # measuring must not shift the training RNG
            peak = measure_matmul_gflops(_DTYPES[c.dtype], device=run.device)
    flops_per_token = _flops_per_token(run.model)
    history: list[dict[str, Any]] = []

    loop_started = time.perf_counter()

    def record(entry: dict[str, Any]) -> None:
        if entry["kind"] != "step":  # seconds since this process started the loop
            entry["elapsed_s"] = round(time.perf_counter() - loop_started, 3)
        history.append(entry)
        if run.info.is_main and entry["kind"] != "step":
            _append_log(run.log_path, entry)

    if run.step == 0:
        record({"kind": "eval", "step": 0, "val_loss": run.evaluate()})
    end = c.max_steps if stop_after is None else min(stop_after, c.max_steps)
    bar = _progress_bar(run)
    window_start, window_tokens = time.perf_counter(), 0
    val_loss = None
    try:
        while run.step < end:
            loss = run.train_step()
            window_tokens += run.tokens_per_step
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_tokens / max(elapsed, 1e-9) / run.info.world_size
            mfu = tokens_per_s * flops_per_token / (peak * 1e9)
            lr = run.optimizer.param_groups[0]["lr"]
            record({"kind": "step", "step": run.step, "loss": loss, "lr": lr})
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", mfu=f"{mfu:.0%}", refresh=False
            )
            if run.step % c.log_interval == 0 or run.step == end:
                record(
                    {
                        "kind": "train",
                        "step": run.step,
                        "loss": loss,
                        "lr": lr,
                        "tokens_per_s": tokens_per_s,
                        "mfu": mfu,
                        "tokens_seen": run.tokens_seen,
                    }
                )
                window_start, window_tokens = time.perf_counter(), 0
            if run.step % c.eval_interval == 0 or run.step == c.max_steps:
                val_loss = run.evaluate()
                record({"kind": "eval", "step": run.step, "val_loss": val_loss})
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}", refresh=False)
            interval = c.checkpoint_interval
            if (interval and run.step % interval == 0) or run.step == end:
                run.save({"loss": loss, "val_loss": val_loss})
    finally:
        bar.close()
    return history


# ---------------------------------------------------------------------------------------------
# The course model: trained once, cached
# ---------------------------------------------------------------------------------------------

COURSE_TRAIN: dict[str, Any] = {
    "model_preset": "course",
    "max_steps": 1200,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "warmup_steps": 30,
    "eval_interval": 200,
    "eval_batches": 8,
    "log_interval": 20,
    "checkpoint_interval": 200,
    "seed": 1337,
}
"""The course default run (``configs/course.toml`` holds the same settings for ``minillm train``)."""


def course_config(**overrides: Any) -> TrainConfig:
    """The course default :class:`TrainConfig`, with any setting replaced."""
    return TrainConfig.from_dict({**COURSE_TRAIN, **overrides})


def cache_dir() -> Path:
    """The cache folder for trained course artefacts: ``$MINILLM_CACHE`` or ``~/.cache/minillm``."""
    configured = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "minillm"


def _fingerprint(*parts: Any) -> str:
    import hashlib

    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished folder into place atomically; if another process won the race, keep theirs."""
    if final.exists():
        shutil.rmtree(final)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def course_data(*, rebuild: bool = False, verbose: bool = True) -> Path:
    """The course dataset folder (shards + tokenizer), prepared once and cached.

    Runs :func:`minillm.prepare.prepare` with :data:`minillm.prepare.COURSE_DATA` the first time
    (about 20 s) into the cache folder; later calls return the folder at once.
    """
    from minillm.prepare import COURSE_DATA, META_FILE, prepare

    final = cache_dir() / f"course-data-{_fingerprint(COURSE_DATA, _FORMAT_VERSION)}"
    if (final / META_FILE).is_file() and not rebuild:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    prepare(tmp, verbose=verbose, **{k: v for k, v in COURSE_DATA.items()})
    return _publish(tmp, final)


def course_model_dir() -> Path:
    """Where :func:`course_model` keeps its run (checkpoint, log, tokenizer)."""
    from minillm.model import PRESETS
    from minillm.prepare import COURSE_DATA

    key = _fingerprint(COURSE_DATA, COURSE_TRAIN, PRESETS["course"], _FORMAT_VERSION)
    return cache_dir() / f"course-model-{key}"


def course_model(*, retrain: bool = False, verbose: bool = True):
    """The course's pretrained GPT and its BPE tokenizer, trained on first use and then cached.

    The first call prepares the data (:func:`course_data`) and trains the course default
    (:data:`COURSE_TRAIN`, about a minute or two on a 2-core CPU), deterministically; the
    finished run is moved into :func:`course_model_dir` in one rename, so an interrupted call
    leaves nothing half-written. Later calls load it in about a second. The cache folder is
    ``~/.cache/minillm`` or ``$MINILLM_CACHE``; a change to the course settings retrains.

    Args:
        retrain: train again even if a cached model exists.
        verbose: print progress (the data preparation and the training bar).

    Returns:
        ``(model, tokenizer)``: a :class:`minillm.model.GPT` in eval mode on the CPU, and a
        :class:`minillm.tokenizer.BPETokenizer`.
    """
    from minillm.tokenizer import BPETokenizer

    final = course_model_dir()
    if retrain or not (final / CHECKPOINT_NAME).is_file():
        data_dir = course_data(verbose=verbose)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        config = course_config(
            data_dir=str(data_dir), out_dir=str(tmp), device="cpu", progress=verbose
        )
        train(config)
        (tmp / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        _publish(tmp, final)
    model = load_checkpoint(final / CHECKPOINT_NAME).build_model()
    return model, BPETokenizer.load(final / TOKENIZER_NAME)


# ---------------------------------------------------------------------------------------------
# Command line: minillm train, minillm sample
# ---------------------------------------------------------------------------------------------


def _parse_none(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as rmsnorm


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig setting; only flags given on the command line override."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_overrides":
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        kind = (
            next(a for a in typing.get_args(hint) if a is not type(None))
            if typing.get_args(hint)
            else hint
        )
        parse = _parse_none(kind) if type(None) in typing.get_args(hint) else kind
        parser.add_argument(flag, type=parse, default=None, metavar=f.name.upper(), help=help_text)
    parser.add_argument(
        "--model-override",
        dest="model_overrides",
        type=_parse_override,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="replace one GPTConfig field of the preset, e.g. n_layer=2 (repeatable; "
        "VALUE is read as JSON when it can be)",
    )


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if "model_overrides" in given:
        given["model_overrides"] = dict(given["model_overrides"])
    if args.config:
        base = TrainConfig.from_file(args.config).to_dict()
        if "model_overrides" in given:
            given["model_overrides"] = {**base["model_overrides"], **given["model_overrides"]}
        return TrainConfig.from_dict({**base, **given})
    return TrainConfig.from_dict(given)


def _train_cli(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    result = train(config, resume=args.resume)
    if dist_info().is_main:
        val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
        print(
            f"done: {result.step} steps in {result.seconds:.0f} s, validation loss {val}; "
            f"checkpoint {result.checkpoint_path}, log {result.out_dir / LOG_NAME}"
        )
    return 0


def _sample_cli(args: argparse.Namespace) -> int:
    from minillm.tokenizer import BPETokenizer

    if args.checkpoint is None:
        model, tokenizer = course_model(verbose=True)
    else:
        checkpoint_path = Path(args.checkpoint)
        if checkpoint_path.is_dir():
            checkpoint_path = checkpoint_path / CHECKPOINT_NAME
        model = load_checkpoint(checkpoint_path).build_model()
        tokenizer_path = Path(args.tokenizer or checkpoint_path.parent / TOKENIZER_NAME)
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"no tokenizer at {tokenizer_path}; pass --tokenizer PATH")
        tokenizer = BPETokenizer.load(tokenizer_path)
    device = auto_device(args.device)
    model.to(device)
    prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    if not prompt_ids:
        prompt_ids = [tokenizer.eot_id]  # an empty prompt starts a fresh document
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = torch.tensor([prompt_ids] * args.num_samples, device=device)
    out = model.generate(
        idx,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        generator=generator,
    )
    for number, row in enumerate(out.tolist(), start=1):
        if args.num_samples > 1:
            print(f"--- sample {number} ---")
        print(tokenizer.decode(row))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm train`` and ``minillm sample``."""
    train_parser = subparsers.add_parser(
        "train",
        help="pretrain a GPT on prepared shards (config file and/or flags)",
        description="Pretrain a GPT on the shards written by `minillm prepare`. Settings come "
        "from --config (a .toml or .json file; configs/course.toml is the course default), then "
        "from the flags below, which override it. Under torchrun every rank trains on its "
        "shard of the data; only rank 0 writes the log and the checkpoint.",
    )
    train_parser.add_argument(
        "--config", type=Path, default=None, help="a .toml or .json file of settings"
    )
    train_parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT_DIR/checkpoint.safetensors exactly where it stopped",
    )
    _add_setting_flags(train_parser)
    train_parser.set_defaults(handler=_train_cli)

    sample_parser = subparsers.add_parser(
        "sample",
        help="generate text from a checkpoint",
        description="Continue a prompt with a trained model. Without --checkpoint the course "
        "model is used (trained and cached on first use, see minillm.course_model).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sample_parser.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint.safetensors file or the run folder holding one",
    )
    sample_parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer file; default: tokenizer.bpe beside the checkpoint",
    )
    sample_parser.add_argument("--prompt", default="", help="text to continue ('' = from scratch)")
    sample_parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    sample_parser.add_argument(
        "--temperature", type=float, default=0.8, help="randomness: 0 = greedy, 1 = the model's"
    )
    sample_parser.add_argument(
        "--top-k", type=int, default=50, help="sample among the k most likely tokens"
    )
    sample_parser.add_argument("--num-samples", type=int, default=1, help="how many continuations")
    sample_parser.add_argument("--seed", type=int, default=1337, help="sampling seed")
    sample_parser.add_argument(
        "--device", default=None, help="cpu, cuda, mps; default: the fastest available"
    )
    sample_parser.set_defaults(handler=_sample_cli)
