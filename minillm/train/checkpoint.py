"""Checkpoints: one safetensors file holding everything a run needs to resume exactly.

Taught in lesson 05 (pretraining). :func:`save_checkpoint` writes the model, the optimizer, the
step, every random generator and the data position atomically (a temporary file, then a rename);
:func:`load_checkpoint` reads it back without executing pickled code; :func:`load_model_state`
copies weights into a model after checking every shape.

Integrity (issue 17): the header records a SHA-256 of every tensor (its name, dtype, shape and
bytes) and of the header itself; :func:`load_checkpoint` verifies them and refuses a file whose
weights are not finite, whose optimizer state is incomplete, or whose model configuration does
not match its tensors. Files written before checksums existed (same format version 1) still load,
with a one-time notice on stderr; :func:`resave_checkpoint` rewrites one with checksums. The
header also records the tokenizer's fingerprint (:meth:`BPETokenizer.fingerprint`), checked by
:func:`check_tokenizer`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minillm.model.config import GPTConfig
from minillm.model.gpt import GPT
from minillm.utils.integrity import (  # the digests are re-exported by minillm.train
    CHECKSUMS_KEY,  # noqa: F401
    HEADER_CHECKSUM_KEY,  # noqa: F401
    check_fingerprint,
    header_digest,  # noqa: F401
    refuse_oversized,
    tensor_digest,  # noqa: F401
    verify_sealed,
    write_sealed,
)

CHECKPOINT_NAME = "checkpoint.safetensors"
TOKENIZER_NAME = "tokenizer.bpe"
FORMAT = "minillm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, corrupt, or does not fit the model."""


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
    tokenizer_fingerprint: str | None = None
    verified: bool = False  # True when the file carried checksums and they matched

    def build_model(self) -> nn.Module:
        """A GPT with the checkpoint's configuration and weights, in eval mode.

        The configuration is first checked against the file's tensors on the meta device (no
        memory), so a header that claims a far larger model is refused before allocating it.
        """

        if self.model_config is None:
            raise CheckpointError(f"{self.path} holds no model configuration to build from")
        held = sum(t.numel() for t in self.model_state.values())
        claimed = _parameters_at_least(self.model_config)
        # before even a meta-device build, which is slow for huge configs
        refuse_oversized(self.path, claimed, held, error=CheckpointError)
        try:
            config = GPTConfig(**self.model_config)
            with torch.device("meta"):
                shapes = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{self.path}: invalid model configuration: {err}") from err
        stored = {k: tuple(v.shape) for k, v in self.model_state.items()}
        if shapes != stored:
            wanted = sum(math.prod(s) for s in shapes.values())
            held = sum(math.prod(s) for s in stored.values())
            raise CheckpointError(
                f"{self.path}: the header's model configuration describes {wanted:,} parameters "
                f"in {len(shapes)} tensors, but the file holds {held:,} in {len(stored)} "
                "(corrupt or edited header); nothing was allocated"
            )
        model = GPT(config)
        load_model_state(model, self)
        return model.eval()


def _parameters_at_least(config: dict[str, Any]) -> int:
    """A lower bound on a GPT's parameter count from its config: the token embedding plus the
    query and output projections of every layer (each at least ``n_embd**2``)."""
    try:
        n_layer, n_embd, vocab = (int(config[k]) for k in ("n_layer", "n_embd", "vocab_size"))
    except (KeyError, TypeError, ValueError):
        return 0  # let GPTConfig report what is wrong
    return max(0, vocab) * max(0, n_embd) + 2 * max(0, n_layer) * max(0, n_embd) ** 2


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
    tokenizer_fingerprint: str | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
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
        tokenizer_fingerprint: :meth:`BPETokenizer.fingerprint` of the tokenizer the data was
            encoded with; ``sample``, ``eval`` and resume check it.
        model_state, optimizer_state: the full state to save instead of ``model.state_dict()``
            and ``optimizer.state_dict()`` (an FSDP run gathers it from the ranks' shards);
            tied weights must be one tensor, as in ``model.state_dict()``.

    Returns:
        The path written.
    """
    path = Path(path)
    state = model.state_dict() if model_state is None else model_state
    params = {name: t.detach().cpu().contiguous() for name, t in state.items()}
    unique, aliases = _unique_tensors(state)
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
        "tokenizer_fingerprint": tokenizer_fingerprint,
    }
    if optimizer_state is None and optimizer is not None:
        optimizer_state = optimizer.state_dict()
    if optimizer_state is not None:
        header["optimizer"] = _pack_optimizer(optimizer_state, tensors)
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
    return _write(path, tensors, header)


def _write(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Add the checksums to the header and write the file atomically (:mod:`minillm.utils.integrity`)."""
    return write_sealed(path, tensors, header)


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


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, legacy: bool = False
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`. No pickled code is executed.

    The header is read and verified before any tensor; then every tensor is checked against its
    recorded checksum, every floating tensor for NaN and infinity, and the optimizer state for
    completeness. A file without checksums is refused: this version always writes them, so
    their absence means an edit; ``legacy=True`` (an explicit choice) loads a trusted older file
    with a notice.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is truncated, corrupt ("corrupt: tensor X ..."), holds
            non-finite weights, or is not a minillm checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():  # a run folder: its checkpoint
        if not (path / CHECKPOINT_NAME).is_file():
            raise FileNotFoundError(
                f"{path} is a folder without a {CHECKPOINT_NAME}; give a checkpoint file (from "
                "minillm train) or the run folder that holds one"
            )
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as file:
            header = _read_header(path, file.metadata() or {})
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {err}. "
            "It was left as it is; point to another checkpoint or train again."
        ) from err
    verified = verify_sealed(
        path, header, tensors, legacy=legacy, error=CheckpointError, what="checkpoint"
    )
    try:
        return _assemble(path, header, tensors, verified)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: corrupt header: {err!r} is missing or malformed") from err


def _read_header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    try:
        header = json.loads(metadata["minillm"])
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path} is a safetensors file but not a minillm checkpoint (no valid 'minillm' "
            "header); expected a file written by minillm.train.checkpoint.save_checkpoint"
        ) from err
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version!r}; this minillm reads up to {FORMAT_VERSION}"
        )
    return header


def _assemble(
    path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor], verified: bool
) -> Checkpoint:
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
    optimizer_state = None
    if "optimizer" in header:
        optimizer_state = _unpack_optimizer(header["optimizer"], tensors)
        check_optimizer_state(optimizer_state, path)
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
        tokenizer_fingerprint=header.get("tokenizer_fingerprint"),
        verified=verified,
    )


def check_optimizer_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse an optimizer state that would crash or mislead the first resumed step.

    Every per-parameter entry must belong to a parameter of the groups, and all entries must
    hold the same keys (a renamed or missing ``exp_avg`` is caught here, not as a KeyError
    inside ``optimizer.step``).

    Raises:
        CheckpointError: naming the parameter and the keys that differ.
    """
    params = {i for group in state["param_groups"] for i in group["params"]}
    entries = state["state"]
    stray = sorted(set(entries) - params)
    if stray:
        raise CheckpointError(
            f"{path}: corrupt optimizer state: entries {stray[:5]} belong to no parameter group"
        )
    # groups of one kind (minillm.train.muon.MuonAdamW: "muon" or "adamw"; plain optimizers: one
    # kind) keep the same entries per parameter
    kind_of = {i: group.get("kind") for group in state["param_groups"] for i in group["params"]}
    for kind in dict.fromkeys(kind_of.values()):  # in group order
        key_sets = {i: frozenset(e) for i, e in entries.items() if kind_of[i] == kind}
        if not key_sets:
            continue
        expected = max(set(key_sets.values()), key=lambda k: sum(v == k for v in key_sets.values()))
        for index, keys in sorted(key_sets.items()):
            if keys != expected:
                raise CheckpointError(
                    f"{path}: corrupt optimizer state: parameter {index} holds "
                    f"{sorted(keys)}, the others {sorted(expected)} (renamed or missing tensor)"
                )


def check_optimizer_fits(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimizer state whose groups or tensor shapes differ from ``optimizer``'s.

    Raises:
        CheckpointError: the first parameter whose state does not fit.
    """
    state = checkpoint.optimizer_state or {}
    saved_groups = [len(g["params"]) for g in state.get("param_groups", [])]
    groups = [len(g["params"]) for g in optimizer.param_groups]
    if saved_groups != groups:
        raise CheckpointError(
            f"{checkpoint.path}: the optimizer state has parameter groups of sizes "
            f"{saved_groups}, this run {groups}"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, entry in state.get("state", {}).items():
        for key, value in entry.items():
            if (
                isinstance(value, torch.Tensor)
                and value.dim()
                and value.shape != params[index].shape
            ):
                raise CheckpointError(
                    f"{checkpoint.path}: optimizer tensor {index}/{key} has shape "
                    f"{tuple(value.shape)}, its parameter {tuple(params[index].shape)}"
                )


def check_tokenizer(checkpoint: Checkpoint, tokenizer: Any, source: str | Path = "") -> None:
    """Refuse a tokenizer other than the one the checkpoint's data was encoded with.

    Checkpoints without a recorded fingerprint (older files, or runs given raw token arrays)
    are not checked.

    Raises:
        CheckpointError: the fingerprints differ; the message names both and the fix.
    """
    check_fingerprint(
        checkpoint.tokenizer_fingerprint, tokenizer, checkpoint.path, source, error=CheckpointError
    )


def resave_checkpoint(path: str | Path, out: str | Path | None = None) -> Path:
    """Rewrite a checkpoint (for example one without checksums) in the current format.

    The tensors and header are copied unchanged; checksums are computed afresh, so only a file
    you trust should be re-saved. Returns the path written (``out``, default: in place).
    """
    from safetensors import safe_open

    path = Path(path)
    checkpoint = load_checkpoint(path, legacy=True)  # refuses corrupt files that carry checksums
    with safe_open(str(path), framework="pt", device="cpu") as file:
        header = json.loads(file.metadata()["minillm"])
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    header.setdefault("tokenizer_fingerprint", checkpoint.tokenizer_fingerprint)
    return _write(Path(out) if out is not None else path, tensors, header)


def checkpoint_is_valid(path: str | Path) -> bool:
    """Whether ``path`` loads as a verified checkpoint (checksums present and matching).

    The cheap test a cache runs before trusting a file; a False answer means rebuild it.
    """
    try:
        return load_checkpoint(path).verified
    except (CheckpointError, FileNotFoundError):
        return False


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
