"""minillm.train: the config, the schedule, the optimizer groups, the loop and its bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minillm.model import GPT, GPTConfig
from minillm.train import (
    CHECKPOINT_NAME,
    NonFiniteLossError,
    TrainConfig,
    configure_optimizer,
    get_lr,
    load_checkpoint,
    plot_log,
    read_log,
    train,
)

VOCAB, BLOCK = 32, 16


def tiny_gpt(seed: int = 0, dropout: float = 0.0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, dropout=dropout
    )
    return GPT(config)


def pattern_tokens(n: int = 3000, seed: int = 0) -> np.ndarray:
    """A learnable stream: counting 0..19 over and over, with a little noise."""
    rng = np.random.default_rng(seed)
    tokens = np.arange(n) % 20
    noisy = rng.random(n) < 0.05
    tokens[noisy] = rng.integers(0, VOCAB, noisy.sum())
    return tokens.astype(np.uint16)


def quick_config(tmp_path, **changes) -> TrainConfig:
    settings = dict(
        out_dir=str(tmp_path / "run"),
        max_steps=20,
        batch_size=4,
        learning_rate=1e-2,
        warmup_steps=2,
        eval_interval=10,
        eval_batches=2,
        log_interval=5,
        checkpoint_interval=10,
        progress=False,
        peak_gflops=10.0,  # skip the matmul timing in tests
    )
    settings.update(changes)
    return TrainConfig(**settings)


# ---- TrainConfig ---------------------------------------------------------------------------


def test_unknown_setting_is_rejected_with_the_valid_ones_listed():
    with pytest.raises(ValueError, match="unknown training setting") as excinfo:
        TrainConfig.from_dict({"max_step": 10})
    assert "max_steps" in str(excinfo.value) and "learning_rate" in str(excinfo.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_steps", "10"),
        ("compile", 1),
        ("learning_rate", "fast"),
        ("batch_size", 2.5),
        ("max_steps", True),
        ("model_overrides", [1]),
    ],
)
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(TypeError, match=key):
        TrainConfig.from_dict({key: value})


def test_an_int_is_accepted_where_a_float_is_expected():
    config = TrainConfig(learning_rate=1, min_lr=0)
    assert isinstance(config.learning_rate, float) and config.learning_rate == 1.0


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_steps", 0), ("dtype", "int8"), ("beta2", 1.0), ("grad_clip", -1.0), ("min_lr", 1.0)],
)
def test_out_of_range_values_are_rejected(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig.from_dict({key: value})


def test_config_files_in_toml_and_json(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('max_steps = 7\ndtype = "bfloat16"\n[model_overrides]\nn_layer = 2\n')
    config = TrainConfig.from_file(toml, batch_size=3)
    assert (config.max_steps, config.dtype, config.batch_size) == (7, "bfloat16", 3)
    assert config.model_overrides == {"n_layer": 2}
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_steps": 7, "lr": 0.1}')
    with pytest.raises(ValueError, match="'lr'"):
        TrainConfig.from_file(bad)
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_file(tmp_path / "none.toml")


# ---- schedule and optimizer ----------------------------------------------------------------


def test_warmup_is_linear_then_cosine_decays_to_the_minimum():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    lrs = [get_lr(s, **kw) for s in range(120)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # half-way down the cosine: the mean of max and min
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_weight_decay_applies_to_matrices_only():
    model = tiny_gpt()
    optimizer = configure_optimizer(model, learning_rate=1e-3, weight_decay=0.1)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["params"]
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["params"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_accumulating_micro_batches_equals_one_big_batch():
    model = tiny_gpt()
    tokens = torch.as_tensor(pattern_tokens(8 * (BLOCK + 1)).astype(np.int64))
    x = tokens.view(8, BLOCK + 1)[:, :-1]
    y = tokens.view(8, BLOCK + 1)[:, 1:]
    model(x, y)[1].backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for xs, ys in zip(x.chunk(4), y.chunk(4), strict=True):
        (model(xs, ys)[1] / 4).backward()
    for g_big, p in zip(big, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g_big, rtol=1e-5, atol=1e-7)


# ---- the loop --------------------------------------------------------------------------------


def test_training_learns_and_writes_a_log_that_plots(tmp_path):
    tokens = pattern_tokens()
    result = train(
        quick_config(tmp_path, max_steps=40),
        model=tiny_gpt(),
        train_tokens=tokens[:2500],
        val_tokens=tokens[2500:],
    )
    records = read_log(result.out_dir)
    evals = [r["val_loss"] for r in records if r["kind"] == "eval"]
    assert evals[0] == pytest.approx(math.log(VOCAB), abs=0.3)  # an untrained model guesses
    assert evals[-1] < evals[0] - 1.0, evals
    assert result.val_loss == evals[-1]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in records if r["kind"] == "train")
    assert len(result.train_losses) == 40
    ax = plot_log(result.out_dir)
    assert len(ax.get_lines()) == 2
    assert load_checkpoint(result.out_dir / CHECKPOINT_NAME).step == 40


def test_bfloat16_autocast_trains_on_cpu(tmp_path):
    tokens = pattern_tokens()
    result = train(
        quick_config(tmp_path, max_steps=4, dtype="bfloat16", eval_interval=4),
        model=tiny_gpt(),
        train_tokens=tokens[:2500],
        val_tokens=tokens[2500:],
    )
    assert all(math.isfinite(loss) for loss in result.train_losses)
    assert result.model.transformer.wte.weight.dtype == torch.float32  # master weights stay fp32


def test_float16_on_cpu_trains_with_a_loss_scaler(tmp_path):
    tokens = pattern_tokens()
    result = train(
        quick_config(tmp_path, max_steps=3, dtype="float16", device="cpu", eval_interval=3),
        model=tiny_gpt(),
        train_tokens=tokens[:2500],
        val_tokens=tokens[2500:],
    )
    assert all(math.isfinite(loss) for loss in result.train_losses)
    scaler_state = load_checkpoint(result.out_dir / CHECKPOINT_NAME).scaler_state
    assert scaler_state and scaler_state["scale"] == 2.0**16  # no overflow in 3 steps


def test_missing_dataset_names_the_command_that_makes_it(tmp_path):
    config = quick_config(tmp_path, data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="minillm prepare"):
        train(config, model=tiny_gpt())


def test_empty_and_too_short_datasets_are_refused(tmp_path):
    tokens = pattern_tokens()
    with pytest.raises(ValueError, match="empty"):
        train(quick_config(tmp_path), model=tiny_gpt(), train_tokens=tokens[:0], val_tokens=tokens)
    with pytest.raises(ValueError, match=r"10 tokens.*block_size \+ 1 = 17"):
        train(quick_config(tmp_path), model=tiny_gpt(), train_tokens=tokens, val_tokens=tokens[:10])
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_a_fresh_run_never_replaces_an_existing_checkpoint(tmp_path):
    tokens = pattern_tokens()
    config = quick_config(tmp_path, max_steps=2)
    train(config, model=tiny_gpt(), train_tokens=tokens, val_tokens=tokens)
    path = tmp_path / "run" / CHECKPOINT_NAME
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        train(config, model=tiny_gpt(1), train_tokens=tokens, val_tokens=tokens)
    assert path.read_bytes() == before


class NaNAfter(torch.nn.Module):
    """Wraps a model; its loss turns NaN from the ``bad_call``-th forward pass in training mode."""

    def __init__(self, model: torch.nn.Module, bad_call: int) -> None:
        super().__init__()
        self.inner, self.bad_call, self.calls = model, bad_call, 0
        self.config = model.config

    def forward(self, idx, targets=None):
        logits, loss = self.inner(idx, targets)
        if self.training:
            self.calls += 1
            if self.calls >= self.bad_call:
                loss = loss * float("nan")
        return logits, loss


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    tokens = pattern_tokens()
    config = quick_config(tmp_path, checkpoint_interval=2, max_steps=10)
    with pytest.raises(NonFiniteLossError, match=r"nan at step 5.*step 4\) is kept"):
        train(
            config, model=NaNAfter(tiny_gpt(), bad_call=5), train_tokens=tokens, val_tokens=tokens
        )
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert checkpoint.step == 4
    assert all(torch.isfinite(t).all() for t in checkpoint.model_state.values())
