"""Checkpoints: safe format, round trips, exact resume, and clear errors for bad files."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from minillm.model import GPT, GPTConfig
from minillm.train import (
    CHECKPOINT_NAME,
    CheckpointError,
    TrainConfig,
    configure_optimizer,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    train,
)

VOCAB, BLOCK = 32, 16


def tiny_gpt(seed: int = 0, n_embd: int = 16, dropout: float = 0.1) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(
            vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=n_embd, dropout=dropout
        )
    )


def tokens(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(1)
    return ((np.arange(n) % 20 + (rng.random(n) < 0.1) * 5) % VOCAB).astype(np.uint16)


def config(tmp_path, name: str = "run", **changes) -> TrainConfig:
    settings = dict(
        out_dir=str(tmp_path / name),
        max_steps=12,
        batch_size=4,
        grad_accum_steps=2,
        learning_rate=1e-2,
        warmup_steps=3,
        eval_interval=4,
        eval_batches=2,
        log_interval=2,
        checkpoint_interval=0,
        progress=False,
        peak_gflops=10.0,
    )
    settings.update(changes)
    return TrainConfig(**settings)


def run(cfg: TrainConfig, **kwargs):
    data = tokens()
    return train(cfg, model=tiny_gpt(), train_tokens=data[:2500], val_tokens=data[2500:], **kwargs)


def test_the_file_is_safetensors_with_a_json_header(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", tiny_gpt(), step=3)
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: length, then a JSON header
    header = json.loads(raw[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["minillm"])["step"] == 3
    assert not list(tmp_path.glob(".*tmp")), "the temporary file must be gone"


def test_round_trip_restores_weights_optimizer_and_tied_embedding(tmp_path):
    model = tiny_gpt()
    optimizer = configure_optimizer(model, learning_rate=1e-3, weight_decay=0.1)
    model(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "c.safetensors",
        model,
        step=1,
        optimizer=optimizer,
        train_config=TrainConfig(max_steps=5),
        data_state={"tokens_seen": 8},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 1 and checkpoint.data_state == {"tokens_seen": 8}
    assert checkpoint.train_config["max_steps"] == 5
    assert checkpoint.model_config == model.config.to_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(checkpoint.model_state[name], tensor, rtol=0, atol=0)
    rebuilt = checkpoint.build_model()
    assert rebuilt.lm_head.weight is rebuilt.transformer.wte.weight  # still tied
    fresh_optimizer = configure_optimizer(rebuilt, learning_rate=1e-3, weight_decay=0.1)
    fresh_optimizer.load_state_dict(checkpoint.optimizer_state)
    for (_, a), (_, b) in zip(
        sorted(optimizer.state_dict()["state"].items()),
        sorted(fresh_optimizer.state_dict()["state"].items()),
        strict=True,
    ):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    x = torch.randint(0, VOCAB, (2, BLOCK))
    torch.testing.assert_close(rebuilt(x)[0], model.eval()(x)[0], rtol=0, atol=0)


def test_resumed_run_repeats_the_uninterrupted_one_bit_for_bit(tmp_path):
    """Dropout, accumulation and the batch order all depend on saved random states."""
    whole = run(config(tmp_path, "whole"))
    first = run(config(tmp_path, "split"), stop_after=5)
    assert first.step == 5
    # disturb every generator a resumed process could inherit
    torch.manual_seed(12345)
    random.seed(7)
    np.random.seed(7)
    second = run(config(tmp_path, "split"), resume=True)
    assert second.step == 12
    assert first.train_losses == whole.train_losses[:5]
    assert second.train_losses == whole.train_losses[5:]  # exact float equality
    evals_whole = [(r["step"], r["val_loss"]) for r in whole.history if r["kind"] == "eval"]
    evals_split = [
        (r["step"], r["val_loss"]) for r in first.history + second.history if r["kind"] == "eval"
    ]
    assert evals_split == evals_whole
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], tensor), name


def test_truncated_checkpoint_is_reported_and_left_alone(tmp_path):
    run(config(tmp_path, max_steps=2))
    path = tmp_path / "run" / CHECKPOINT_NAME
    path.write_bytes(path.read_bytes()[:-100])
    damaged = path.read_bytes()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        run(config(tmp_path, max_steps=4), resume=True)
    assert path.read_bytes() == damaged


def test_checkpoint_of_another_shape_names_the_difference(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", tiny_gpt(n_embd=16), step=0)
    with pytest.raises(CheckpointError, match=r"different shape.*\(32, 16\) in the checkpoint"):
        load_model_state(tiny_gpt(n_embd=32), load_checkpoint(path))
    data = tokens()
    cfg = config(tmp_path, max_steps=2)
    train(cfg, model=tiny_gpt(n_embd=16), train_tokens=data, val_tokens=data)
    saved = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(
        CheckpointError, match="configuration differs .n_embd: 16 in the checkpoint"
    ):
        train(cfg, model=tiny_gpt(n_embd=32), train_tokens=data, val_tokens=data, resume=True)
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == saved


def test_other_safetensors_files_and_missing_files_are_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a minillm checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError):
        run(config(tmp_path, "never"), resume=True)
