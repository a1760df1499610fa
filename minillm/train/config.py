"""The settings of a training run: :class:`TrainConfig`, validated field by field.

Split from :mod:`minillm.train` (which re-exports it): one dataclass whose fields carry their help
text (``minillm train --help`` is generated from them), plus the checks that turn a wrong type or
value into an error naming the setting and what it allows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillm.train.distributed import STRATEGIES
from minillm.train.precision import DTYPES
from minillm.utils.environment import check_seed

OPTIMIZERS = ("adamw", "muon")

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _setting(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:  # noqa: A002
    """A dataclass field with a help text (shown by ``minillm train --help``) and its choices."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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
    weight_decay: float = _setting(
        0.1, "decoupled weight decay, on matrices only (AdamW's, and Muon's with optimizer=muon)"
    )
    beta1: float = _setting(0.9, "AdamW beta1 (momentum of the gradient)")
    beta2: float = _setting(0.95, "AdamW beta2 (momentum of the squared gradient)")
    optimizer: str = _setting(
        "adamw",
        "adamw (every parameter) or muon (Muon on the blocks' matrices, AdamW on the rest: "
        "embeddings, head, norms, biases; see minillm.train.muon)",
        choices=OPTIMIZERS,
    )
    # 0.01: the best of 0.01, 0.02, 0.04 on lesson 05's run (bench/results/muon.json)
    muon_lr: float = _setting(
        0.01, "Muon's peak learning rate (optimizer=muon), on learning_rate's schedule"
    )
    grad_clip: float = _setting(1.0, "clip the global gradient norm to this; 0 disables")
    eval_interval: int = _setting(100, "evaluate on the validation split every this many steps")
    eval_batches: int = _setting(10, "batches averaged for each evaluation")
    log_interval: int = _setting(10, "append training metrics to the log every this many steps")
    checkpoint_interval: int = _setting(
        100, "save a checkpoint every this many steps; 0: at the end"
    )
    dtype: str = _setting(
        "float32",
        "float32, bfloat16 (autocast) or float16 (autocast + loss scaling; slow on a CPU)",
    )
    compile: bool = _setting(False, "run the model through torch.compile(fullgraph=True)")
    strategy: str = _setting(
        "ddp",
        "with several ranks (torchrun): ddp (replicate the model) or fsdp (FSDP2: shard "
        "weights, gradients and AdamW state per block); one process ignores it",
        choices=STRATEGIES,
    )
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
        if path.suffix not in (".toml", ".json"):
            raise ValueError(f"config file {path} must end in .toml or .json")
        kind = path.suffix[1:].upper()
        try:
            text = path.read_text(encoding="utf-8")
            values = tomllib.loads(text) if kind == "TOML" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"config file {path} is not valid {kind}: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a {kind} table of settings")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed (validated like a new config)."""
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    @property
    def muon_final_lr(self) -> float:
        """Muon's rate at the end of the cosine: the same fraction of its peak as AdamW's."""
        fraction = self.final_lr / self.learning_rate if self.learning_rate > 0 else 0.1
        return self.muon_lr * fraction


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
    for f in dataclasses.fields(config):  # NaN passes every comparison below unnoticed
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value}")
    if config.peak_gflops is not None and config.peak_gflops <= 0:
        raise ValueError(
            f"peak_gflops must be > 0 (GFLOP/s) or None to measure it, got {config.peak_gflops}"
        )
    check_seed(config.seed)
    positive = ("max_steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches")
    for name in (*positive, "log_interval"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("warmup_steps", "checkpoint_interval"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in ("learning_rate", "muon_lr", "weight_decay", "grad_clip"):
        if getattr(config, name) < 0 or not math.isfinite(getattr(config, name)):
            raise ValueError(f"{name} must be a finite number >= 0, got {getattr(config, name)}")
    if config.min_lr is not None and not 0 <= config.min_lr <= config.learning_rate:
        raise ValueError(f"min_lr must lie in [0, learning_rate], got {config.min_lr}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(config, name) < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {getattr(config, name)}")
    if config.block_size is not None and config.block_size < 1:
        raise ValueError(f"block_size must be >= 1 or None, got {config.block_size}")
    if config.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {config.dtype!r}")
    if config.strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {config.strategy!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.strategy == "fsdp" and config.optimizer == "muon":
        # Muon orthogonalises whole matrices; FSDP hands each rank a shard of each one
        raise ValueError("optimizer='muon' runs on one process or under strategy='ddp', not fsdp")
    if config.strategy == "fsdp" and (config.compile or config.dtype == "float16"):
        # neither combination is tested here: refuse it rather than fail mid-run
        raise ValueError(
            "strategy='fsdp' runs without compile and with dtype float32 or bfloat16; "
            f"got compile={config.compile}, dtype={config.dtype!r}"
        )
