"""Checkpoints: one safetensors file holding everything a run needs to resume exactly.

Taught in lesson 05 (pretraining). :func:`save_checkpoint` writes the model, the optimizer, the
step, every random generator and the data position atomically (a temporary file, then a rename);
:func:`load_checkpoint` reads it back without executing pickled code; :func:`load_model_state`
copies weights into a model after checking every shape.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.safetensors"
TOKENIZER_NAME = "tokenizer.bpe"
FORMAT = "minillm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, or does not fit the model."""


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


def rng_snapshot(generator: torch.Generator | None) -> dict[str, Any]:
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


def restore_rng(snapshot: dict[str, Any], generator: torch.Generator | None) -> None:
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
    train_config: Any = None,
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
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": int(step),
        "model_config": _model_config_dict(model),
        "model_aliases": aliases,
        "model_names": list(params),
        "train_config": (
            train_config.to_dict() if hasattr(train_config, "to_dict") else train_config
        ),
        "data": data_state or {},
        "metrics": metrics or {},
    }
    if optimizer is not None:
        header["optimizer"] = _pack_optimizer(optimizer.state_dict(), tensors)
    if scaler is not None and scaler.is_enabled():
        header["scaler"] = _to_jsonable(scaler.state_dict())
    rng_states = rng_states if rng_states is not None else [rng_snapshot(None)]
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
        if header.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path} is a safetensors file but not a minillm checkpoint (no valid 'minillm' "
            "header); expected a file written by minillm.checkpoint.save_checkpoint"
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
