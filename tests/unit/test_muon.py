"""minillm.train.muon: Muon equals torch.optim.Muon, orthogonalises, splits a GPT, trains and resumes."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch
from test_checkpoint import config as checkpoint_config
from test_checkpoint import tokens

from minillm.cli.train import _add_setting_flags
from minillm.model import GPT, GPTConfig
from minillm.train import CheckpointError, TrainConfig, configure_optimizer, load_checkpoint, train
from minillm.train.muon import Muon, MuonAdamW, newton_schulz, split_muon_params

VOCAB, BLOCK = 32, 16


def tiny_gpt(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    settings = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**settings, **changes}))


def block_gradient(seed: int = 0) -> torch.Tensor:
    """A real gradient: the first MLP matrix of a tiny GPT after one batch."""
    model = tiny_gpt(seed)
    x = torch.randint(0, VOCAB, (4, BLOCK), generator=torch.Generator().manual_seed(seed))
    model(x, x.roll(-1, dims=1))[1].backward()
    return model.transformer.h[0].mlp.c_fc.weight.grad.clone()


# ---- the update rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},  # torch's defaults: lr 1e-3, weight_decay 0.1, Nesterov, adjust_lr_fn "original"
        {"lr": 0.02, "weight_decay": 0.0},  # Keller Jordan's reference defaults
        {"lr": 0.01, "nesterov": False, "adjust_lr_fn": "match_rms_adamw", "momentum": 0.9},
    ],
)
def test_muon_equals_torch_muon_over_200_steps(settings):
    """Matrices of three shapes (tall, wide, square) fitted to a fixed target, both ways."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(24, 8), (8, 24), (12, 12)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    targets = [torch.randn(s, generator=gen) for s in shapes]
    inputs = torch.randn(200, 8, generator=gen)  # one batch per step
    runs = []
    for make in (Muon, torch.optim.Muon):
        params = [w.clone().requires_grad_() for w in start]
        optimizer = make(params, **settings)
        for step in range(200):
            optimizer.zero_grad()
            loss = sum(
                ((p - t) ** 2).sum() * (1 + inputs[step, i])
                for i, (p, t) in enumerate(zip(params, targets, strict=True))
            )
            loss.backward()
            optimizer.step()
        runs.append(params)
    ours, theirs = runs
    for a, b, w in zip(ours, theirs, start, strict=True):
        assert not torch.equal(a, w), "the parameters must have moved"
        assert (a - b).abs().max().item() <= 1e-6


def test_newton_schulz_brings_the_singular_values_near_one():
    grad = block_gradient()
    before = torch.linalg.svdvals(grad) / grad.norm()  # the iteration starts from G / ‖G‖_F
    ortho = newton_schulz(grad).float()
    after = torch.linalg.svdvals(ortho)
    # LayerNorm's output has zero mean, so the gradient has one null direction (σ = 0): it is
    # no direction of the update, and stays well below the others
    kept = before > 1e-3
    assert kept.sum() == len(before) - 1
    assert before[kept].max() / before[kept].min() > 10, "a real gradient's spread is wide"
    assert after[kept].min() > 0.5 and after[kept].max() < 1.5, after  # torch: about (0.5, 1.5)
    assert after[~kept].max() < 0.5
    # the directions are those of U Vᵀ from the exact SVD
    u, _, vh = torch.linalg.svd(grad, full_matrices=False)
    polar = u @ vh
    assert (ortho * polar).sum() / (polar.norm() * ortho.norm()) > 0.95


def test_muon_refuses_what_it_cannot_update():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        Muon([torch.zeros(3, 3, requires_grad=True)], adjust_lr_fn="rms")
    with pytest.raises(ValueError, match="kind"):
        MuonAdamW([{"params": [torch.zeros(3, 3, requires_grad=True)]}])
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.zeros(2, 3, 4))


# ---- which parameters take Muon ------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_the_split_puts_every_parameter_in_exactly_one_group(tie):
    model = tiny_gpt(tie_weights=tie)
    muon, adamw = split_muon_params(model)
    ids = [id(p) for p in muon + adamw]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    blocks = {id(p) for p in model.transformer.h.parameters()}
    assert muon and all(p.ndim == 2 and id(p) in blocks for p in muon)
    expected = [m.weight for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]
    assert {id(p) for p in muon} == {id(p) for p in expected}
    assert id(model.transformer.wte.weight) in {id(p) for p in adamw}
    assert id(model.lm_head.weight) in {id(p) for p in adamw}  # tied or not, never Muon's
    optimizer = configure_optimizer(
        model, learning_rate=1e-3, weight_decay=0.1, optimizer="muon", muon_lr=0.05
    )
    kinds = [(g["kind"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    assert kinds == [("adamw", 1e-3, 0.1), ("adamw", 1e-3, 0.0), ("muon", 0.05, 0.1)]
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(ids)


# ---- training, checkpoints, settings -------------------------------------------------------


def config(tmp_path, name: str = "run", **changes) -> TrainConfig:
    """test_checkpoint's run settings (the same resume tests), with Muon on the matrices."""
    return checkpoint_config(tmp_path, name, **{"optimizer": "muon", "muon_lr": 0.02, **changes})


def run(cfg: TrainConfig, **kwargs):
    data = tokens()
    model = tiny_gpt(dropout=0.1)
    return train(cfg, model=model, train_tokens=data[:2500], val_tokens=data[2500:], **kwargs)


def test_muon_training_resumes_bit_for_bit(tmp_path):
    whole = run(config(tmp_path, "whole"))
    first = run(config(tmp_path, "split"), stop_after=6)
    saved = load_checkpoint(first.checkpoint_path)
    kinds = {g["kind"] for g in saved.optimizer_state["param_groups"]}
    assert kinds == {"muon", "adamw"}
    keys = {frozenset(e) for e in saved.optimizer_state["state"].values()}
    assert keys == {frozenset({"momentum_buffer"}), frozenset({"step", "exp_avg", "exp_avg_sq"})}
    torch.manual_seed(12345)  # disturb every generator a resumed process could inherit
    random.seed(7)
    np.random.seed(7)
    second = run(config(tmp_path, "split"), resume=True)
    assert second.step == 12
    assert first.train_losses + second.train_losses == whole.train_losses  # exact floats
    assert whole.train_losses[-1] < whole.train_losses[0]
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], tensor), name


def test_resuming_with_the_other_optimizer_is_refused(tmp_path):
    run(config(tmp_path, max_steps=2))
    with pytest.raises(CheckpointError, match="optimizer='muon'.*'adamw'"):
        run(config(tmp_path, optimizer="adamw", max_steps=4), resume=True)


def test_the_settings_and_their_flags():
    c = TrainConfig(optimizer="muon", muon_lr=0.04, learning_rate=1e-3, min_lr=2e-4)
    assert c.muon_final_lr == pytest.approx(0.008)  # the same fraction of the peak as AdamW's
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="muon_lr"):
        TrainConfig(muon_lr=-1.0)
    with pytest.raises(ValueError, match="fsdp"):
        TrainConfig(optimizer="muon", strategy="fsdp")
    parser = argparse.ArgumentParser()
    _add_setting_flags(parser)
    args = parser.parse_args(["--optimizer", "muon", "--muon-lr", "0.05"])
    assert (args.optimizer, args.muon_lr) == ("muon", 0.05)
    assert TrainConfig().optimizer == "adamw"
