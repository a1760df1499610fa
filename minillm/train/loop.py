"""Pretraining: the configuration of a run, its schedule and optimizer, and the training loop.

Taught in lesson 05 (pretraining); lessons 06 (distributed) and 07 (mixed precision) teach the
switches it already has: ``dtype``, ``compile`` and rank awareness under ``torchrun``.

- :class:`TrainConfig` (from :mod:`minillm.train.config`): every setting of a run, validated.
- :func:`get_lr`: linear warmup then cosine decay; :func:`configure_optimizer`: AdamW with weight
  decay on matrices only, or (``optimizer="muon"``) Muon + AdamW from :mod:`minillm.train.muon`.
- :func:`estimate_loss`: mean loss over fixed batches of a split.
- :func:`train`: the loop (accumulation, clipping, evaluation, logging, checkpoints, resume).

Its neighbours: :mod:`minillm.train.checkpoint` (save, load, resume), :mod:`minillm.train.runlog` (the JSONL
metrics log), :mod:`minillm.data.splits` (token files and batches), :mod:`minillm.train.distributed`,
:mod:`minillm.train.precision`, :mod:`minillm.course` (the cached course model) and
:mod:`minillm.cli.train` (``minillm train`` / ``minillm sample``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm.data.splits import batch_generator, check_tokens, draw_batch, load_split
from minillm.model.config import GPTConfig
from minillm.model.gpt import GPT
from minillm.train.checkpoint import (
    CHECKPOINT_NAME,
    TOKENIZER_NAME,
    Checkpoint,
    CheckpointError,
    check_optimizer_fits,
    check_tokenizer,
    load_checkpoint,
    load_model_state,
    restore_rng,
    rng_snapshot,
    save_checkpoint,
)
from minillm.train.config import TrainConfig  # re-exported: minillm.train.TrainConfig
from minillm.train.distributed import (
    all_finite,
    all_mean,
    dist_info,
    full_model_state,
    full_optimizer_state,
    init_distributed,
    load_full_optimizer_state,
    pick_device,
    rows_of_rank,
    shard_model,
)
from minillm.train.precision import DTYPES, autocast_context, make_grad_scaler
from minillm.train.runlog import LOG_NAME, append_log, truncate_log
from minillm.train.schedule import configure_optimizer, get_lr
from minillm.train.shards import verify_data_dir
from minillm.utils.environment import ensure_writable_dir, measure_matmul_gflops, seed_everything
from minillm.utils.outputs import RunLock

# ---------------------------------------------------------------------------------------------
# Optimizer, schedule, precision
# ---------------------------------------------------------------------------------------------


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
            x, y = draw_batch(tokens, batch_size, block_size, generator, device)
            _, loss = model(x, y)
            total += loss.float().item()
    model.train(was_training)
    return total / batches


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the kept checkpoint."""


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
        self.device = pick_device(config.device, info)
        self.ctx = autocast_context(config.dtype, self.device)
        self.out_dir = Path(config.out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.log_path = self.out_dir / LOG_NAME
        checkpoint = self._checkpoint_to_resume(resume)

        vocab_size = None
        self.tokenizer = None  # the data folder's tokenizer: its fingerprint goes in checkpoints
        if train_tokens is None:
            data_dir = Path(config.data_dir)
            # sizes and SHA-256 of every shard, once per run: an edited train.bin of the same
            # size is refused, not trained on
            self.tokenizer = verify_data_dir(data_dir, deep=True)
            train_tokens = load_split(data_dir, "train")
            val_tokens = load_split(data_dir, "val") if val_tokens is None else val_tokens
            vocab_size = _vocab_size_of(data_dir)
        if val_tokens is None:
            raise ValueError("train_tokens were given without val_tokens; pass both")
        if model is None:
            seed_everything(config.seed)  # the same initial weights on every rank and every run
            model = build_model(config, vocab_size)
        self.model = model.to(self.device)
        if checkpoint is not None:  # into the whole model, before FSDP shards it
            self._restore_model(checkpoint)
        self.fsdp = info.enabled and config.strategy == "fsdp"
        if self.fsdp:
            self.model = shard_model(self.model)
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
        self.train_tokens = train_tokens  # each rank draws the global batch, keeps its rows
        self.val_tokens = val_tokens

        self.optimizer = configure_optimizer(
            self.model,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device_type=self.device.type,
            optimizer=config.optimizer,
            muon_lr=config.muon_lr,
        )
        self.scaler = make_grad_scaler(config.dtype, self.device)  # float16 only (lesson 07)
        self.generator = batch_generator(config.seed)  # one stream, the same on every rank
        self.step = 0
        self.tokens_seen = 0
        self.last_saved_step: int | None = None
        if checkpoint is not None:
            self._restore_state(checkpoint)
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

    def _restore_model(self, checkpoint: Checkpoint) -> None:
        _check_same_model_config(checkpoint, self.model)
        if self.tokenizer is not None:
            check_tokenizer(checkpoint, self.tokenizer, Path(self.config.data_dir) / TOKENIZER_NAME)
        load_model_state(self.model, checkpoint)
        if checkpoint.optimizer_state is None:
            raise CheckpointError(f"{checkpoint.path} holds no optimizer state to resume from")

    def _restore_state(self, checkpoint: Checkpoint) -> None:
        """Optimizer, scaler, random streams and counters (the weights are already loaded)."""
        saved_optimizer = (checkpoint.train_config or {}).get("optimizer", "adamw")
        if saved_optimizer != self.config.optimizer:
            raise CheckpointError(
                f"{checkpoint.path} was trained with optimizer={saved_optimizer!r}, this run "
                f"asks for {self.config.optimizer!r}; resume with the same optimizer"
            )
        check_optimizer_fits(checkpoint, self.optimizer)
        if self.fsdp:  # the file holds the full state: each rank keeps its shard
            load_full_optimizer_state(self.model, self.optimizer, checkpoint.optimizer_state)
        else:
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        if checkpoint.scaler_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint.scaler_state)
        states = checkpoint.rng_states or []
        if states:  # a rank of another world size takes rank 0's: the batch stream is shared
            restore_rng(states[self.info.rank % len(states)], self.generator)
        saved = checkpoint.train_config or {}
        saved_rows = saved.get("batch_size", 0) * checkpoint.data_state.get("world_size", 1)
        rows = self.config.batch_size * self.info.world_size
        if "batch_size" in saved and saved_rows != rows and self.info.is_main:
            print(
                f"warning: {checkpoint.path} was trained on global batches of {saved_rows} rows, "
                f"this run draws {rows}; batches after the resume will differ from the "
                "uninterrupted run's",
                file=sys.stderr,
            )
        self.step = checkpoint.step
        self.tokens_seen = int(checkpoint.data_state.get("tokens_seen", 0))
        self.last_saved_step = checkpoint.step

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.config.compile:
            # the compiled forward skips the model's id-range check (lesson 07): check the data
            _check_id_range(self.model, self.train_tokens, self.val_tokens)
            # fullgraph: a graph break is an error here, not a silent slowdown
            model = torch.compile(model, fullgraph=True)
        if self.info.enabled and not self.fsdp:  # an FSDP model is its own wrapper
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
        muon_lr = get_lr(
            self.step,
            max_lr=c.muon_lr,
            min_lr=c.muon_final_lr,
            warmup_steps=c.warmup_steps,
            max_steps=c.max_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = muon_lr if group.get("kind") == "muon" else lr
        self.forward_model.train()
        loss_sum = torch.zeros((), device=self.device)
        rows = c.batch_size * self.info.world_size  # the global micro-batch
        for micro in range(c.grad_accum_steps):
            x, y = draw_batch(self.train_tokens, rows, self.block_size, self.generator, None)
            x, y = (rows_of_rank(t, self.info).to(self.device) for t in (x, y))
            last = micro == c.grad_accum_steps - 1
            sync = contextlib.nullcontext()
            if self.fsdp:  # reduce-scatter the gradients once, after the last micro-batch
                self.model.set_requires_gradient_sync(last)
            elif self.info.enabled and not last:
                sync = self.forward_model.no_sync()  # all-reduce gradients once, at the end
            with sync, self.ctx:
                _, loss = self.forward_model(x, y)
                loss = loss / c.grad_accum_steps  # so the summed gradient is the mean's
            self.scaler.scale(loss).backward()
            loss_sum += loss.detach().float()
        loss_value = all_mean(loss_sum, self.info).item()
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
        """Save on rank 0 (after gathering every rank's random state); never save bad weights.

        Under FSDP every rank first helps gather the full weights and optimizer state.
        """
        if not all_finite(self.model, self.info):
            self._fail(f"the weights hold NaN or infinity after step {self.step}")
        model_state = optimizer_state = None
        if self.fsdp:
            model_state = full_model_state(self.model)
            optimizer_state = full_optimizer_state(self.model, self.optimizer)
        snapshot = rng_snapshot(self.generator)
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
                tokenizer_fingerprint=self.tokenizer.fingerprint() if self.tokenizer else None,
                model_state=model_state,
                optimizer_state=optimizer_state,
            )
        if self.info.enabled:  # no rank goes on (or returns, and resumes) before the file exists
            import torch.distributed as dist

            dist.barrier()
        self.last_saved_step = self.step


def _check_id_range(model: nn.Module, *splits: Any) -> None:
    """Every token id of the data lies in the model's vocabulary (raises ``ValueError``)."""
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab_size is None:
        return
    for tokens in splits:
        high = int(tokens.max())  # a NumPy array (or memmap) or a tensor
        if high >= vocab_size:
            raise ValueError(
                f"token id {high} of the data is outside the model's vocabulary "
                f"(vocab_size={vocab_size})"
            )


def _check_same_model_config(checkpoint: Checkpoint, model: nn.Module) -> None:
    """Resume only into the model the checkpoint was saved from: every config field equal."""
    saved, current = checkpoint.model_config, getattr(model, "config", None)
    if saved is None or current is None or not dataclasses.is_dataclass(current):
        return
    current = json.loads(json.dumps(dataclasses.asdict(current)))  # tuples -> lists, as saved
    differences = [
        f"{key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise CheckpointError(
            f"cannot resume {checkpoint.path}: the model configuration differs ("
            + "; ".join(differences)
            + "). Resume with the run's own settings, or start a new run (--overwrite or "
            "another out_dir)."
        )


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
    ``out_dir/checkpoint.safetensors`` is replaced atomically. Under ``torchrun`` every rank
    draws the same global batch of ``batch_size × world_size`` rows and trains on its own
    ``batch_size`` rows, so ``N`` ranks equal one process with ``N`` times the batch; the ranks
    share the model by ``config.strategy`` (DDP or FSDP2) and only rank 0 logs and saves (a
    full, unsharded checkpoint either way: it resumes under any strategy and world size).

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
        RunFolderBusyError: another live process is training into ``out_dir``.
        FileExistsError: ``out_dir`` holds a checkpoint and neither ``resume`` nor
            ``config.overwrite`` is set.
        CheckpointError: the checkpoint to resume is damaged or from another model shape.
        NonFiniteLossError: the loss became NaN or infinite (the last good checkpoint stays).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    info = dist_info()
    started = time.perf_counter()
    init_distributed(info, pick_device(config.device, info))
    with contextlib.ExitStack() as held:
        if info.is_main:
            ensure_writable_dir(config.out_dir, "out_dir")  # before any work, not at the first save
            # one writer per run folder (the OS drops the lock if this process is killed); the
            # temporaries of killed writers go now, not never
            held.enter_context(RunLock(config.out_dir))
        run = _Run(config, model, train_tokens, val_tokens, resume, info)
        if info.is_main:
            if resume:
                truncate_log(run.log_path, run.step)
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
            peak = measure_matmul_gflops(DTYPES[c.dtype], device=run.device)
    flops_per_token = _flops_per_token(run.model)
    history: list[dict[str, Any]] = []

    loop_started = time.perf_counter()

    def record(entry: dict[str, Any]) -> None:
        if entry["kind"] != "step":  # seconds since this process started the loop
            entry["elapsed_s"] = round(time.perf_counter() - loop_started, 3)
        history.append(entry)
        if run.info.is_main and entry["kind"] != "step":
            append_log(run.log_path, entry)

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
