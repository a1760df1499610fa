"""minillm.train on several ranks (DDP and FSDP2 under torchrun, gloo on CPUs) and compiled.

One torchrun launch of two ranks runs every distributed case (starting the processes costs more
than the tiny runs); the test process trains the one-process references. Every rank draws the
global batch of ``batch_size × world_size`` rows and keeps its own rows, so two ranks of ``B``
rows must train exactly what one process of ``2B`` rows trains, up to rounding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from minillm.model import GPT, GPTConfig
from minillm.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, read_log, train

STEPS = 8  # optimizer steps of a whole run; the interrupted runs stop at STEPS // 2
PER_RANK = 2  # rows per rank and micro-batch; one process takes 2 × PER_RANK
# AdamW divides each gradient by the root of its running square: where a gradient is near zero,
# the rounding of the two-rank reduction (1e-7 relative) becomes a step of up to the learning
# rate. The runs below end 5e-6 apart in the weights and 5e-7 in the losses (2-core CPU), while
# training moves the weights by 5e-2; the bound is lesson 06's for AdamW.
TOLERANCE = 1e-4


def tiny_model() -> GPT:
    torch.manual_seed(0)  # every rank and every run starts from the same weights
    return GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16))


def tiny_tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 32, 4000).astype(np.uint16)


def tiny_config(out_dir, **changes) -> TrainConfig:
    values = dict(
        out_dir=str(out_dir), max_steps=STEPS, batch_size=PER_RANK, grad_accum_steps=2,
        warmup_steps=2, learning_rate=1e-2, eval_interval=100, eval_batches=1, log_interval=1,
        checkpoint_interval=STEPS // 2, progress=False, peak_gflops=10.0, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**values, **changes})


def run(config: TrainConfig, **kwargs):
    tokens = tiny_tokens()
    return train(config, model=tiny_model(), train_tokens=tokens, val_tokens=tokens[:500], **kwargs)


SCRIPT = textwrap.dedent(
    """
    import json, os, shutil, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, sys.argv[2])
    from test_train_ddp import STEPS, run, tiny_config

    root, rank = Path(sys.argv[1]), int(os.environ["RANK"])
    def report(name, result):
        weights = {n: p.detach().double().sum().item() for n, p in result.model.named_parameters()}
        (root / f"{name}.rank{rank}.json").write_text(json.dumps(
            {"losses": result.train_losses, "weight_sums": weights}))

    report("ddp", run(tiny_config(root / "ddp")))
    run(tiny_config(root / "ddp_resumed"), stop_after=STEPS // 2)
    report("ddp_resumed", run(tiny_config(root / "ddp_resumed"), resume=True))
    run(tiny_config(root / "fsdp", strategy="fsdp"), stop_after=STEPS // 2)
    if rank == 0:  # kept for the one-process resume in the test
        shutil.copy(root / "fsdp" / "checkpoint.safetensors", root / "fsdp_half.safetensors")
    torch.distributed.barrier()
    report("fsdp", run(tiny_config(root / "fsdp", strategy="fsdp"), resume=True))
    run(tiny_config(root / "fsdp_from_one", strategy="fsdp"), resume=True)
    """
)


def weights_of(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n].double() - b[n].double()).abs().max().item() for n in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process references, then every two-rank case in one torchrun launch."""
    root = tmp_path_factory.mktemp("ranks")
    one = run(tiny_config(root / "one", batch_size=2 * PER_RANK))
    run(tiny_config(root / "fsdp_from_one", batch_size=2 * PER_RANK), stop_after=STEPS // 2)
    script = root / "ranks.py"
    script.write_text(SCRIPT)
    tests_dir = str(Path(__file__).parent)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(script), str(root), tests_dir], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    reports = {
        name: [json.loads((root / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]
        for name in ("ddp", "ddp_resumed", "fsdp")
    }
    return root, one, reports


@pytest.mark.slow
def test_ddp_equals_one_process_on_the_same_global_batch(runs):
    root, one, reports = runs
    ranks = reports["ddp"]
    # DDP averages the gradients, so both ranks hold the same weights and log the same mean loss
    assert ranks[0] == ranks[1]
    np.testing.assert_allclose(ranks[0]["losses"], one.train_losses, rtol=0, atol=TOLERANCE)
    ddp, single = weights_of(root / "ddp" / CHECKPOINT_NAME), weights_of(one.checkpoint_path)
    moved = max_difference(single, {n: p.detach() for n, p in tiny_model().state_dict().items()})
    difference = max_difference(ddp, single)
    assert difference <= TOLERANCE, f"DDP differs from one process by {difference}"
    assert moved > 100 * TOLERANCE  # training moved the weights far more than the tolerance


@pytest.mark.slow
def test_only_rank_zero_logs_and_the_checkpoint_holds_one_shared_batch_stream(runs):
    root, _, _ = runs
    out = root / "ddp"
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == list(range(1, STEPS + 1))
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_NAME, "log.jsonl"]
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME)
    assert checkpoint.step == STEPS and checkpoint.data_state["world_size"] == 2
    assert checkpoint.data_state["tokens_seen"] == STEPS * PER_RANK * 16 * 2 * 2  # ·T·accum·ranks
    batch_states = [state["batch"] for state in checkpoint.rng_states]
    assert len(batch_states) == 2 and torch.equal(batch_states[0], batch_states[1])


@pytest.mark.slow
def test_ddp_resume_equals_the_uninterrupted_run(runs):
    root, _, reports = runs
    assert reports["ddp_resumed"][0]["losses"] == reports["ddp"][0]["losses"][STEPS // 2 :]
    resumed = weights_of(root / "ddp_resumed" / CHECKPOINT_NAME)
    uninterrupted = weights_of(root / "ddp" / CHECKPOINT_NAME)
    assert all(torch.equal(resumed[n], uninterrupted[n]) for n in uninterrupted)  # bit for bit


@pytest.mark.slow
def test_fsdp_equals_one_process_and_its_checkpoint_is_the_one_process_format(runs):
    root, one, reports = runs
    ranks = reports["fsdp"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    np.testing.assert_allclose(
        ranks[0]["losses"], one.train_losses[STEPS // 2 :], rtol=0, atol=TOLERANCE
    )
    fsdp = load_checkpoint(root / "fsdp" / CHECKPOINT_NAME)
    single = load_checkpoint(one.checkpoint_path)
    difference = max_difference(fsdp.model_state, single.model_state)
    assert difference <= TOLERANCE, (
        f"FSDP (resumed from its own checkpoint) differs by {difference}"
    )
    # gathered in full on rank 0, tied weights stored once, optimizer keyed as one process keys it
    assert fsdp.model_state.keys() == single.model_state.keys()
    assert fsdp.model_state["lm_head.weight"] is fsdp.model_state["transformer.wte.weight"]
    assert [g["params"] for g in fsdp.optimizer_state["param_groups"]] == [
        g["params"] for g in single.optimizer_state["param_groups"]
    ]
    for index, entries in single.optimizer_state["state"].items():
        for key, value in entries.items():
            got = fsdp.optimizer_state["state"][index][key]
            assert got.shape == value.shape, f"optimizer {index}/{key}: {got.shape}"
            assert (got.double() - value.double()).abs().max() <= TOLERANCE


@pytest.mark.slow
def test_checkpoints_cross_between_fsdp_and_one_process(runs, tmp_path):
    root, one, _ = runs
    single = weights_of(one.checkpoint_path)
    # two FSDP ranks resumed a one-process checkpoint ...
    from_one = weights_of(root / "fsdp_from_one" / CHECKPOINT_NAME)
    assert max_difference(from_one, single) <= TOLERANCE
    # ... and one process resumes the checkpoint two FSDP ranks wrote half-way
    (tmp_path / "out").mkdir()
    shutil.copy(root / "fsdp_half.safetensors", tmp_path / "out" / CHECKPOINT_NAME)
    resumed = run(tiny_config(tmp_path / "out", batch_size=2 * PER_RANK), resume=True)
    assert resumed.step == STEPS
    assert max_difference(weights_of(resumed.checkpoint_path), single) <= TOLERANCE


def test_a_bad_strategy_is_refused_with_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match=r"strategy must be one of \['ddp', 'fsdp'\], got 'zero'"):
        tiny_config(tmp_path, strategy="zero")
    with pytest.raises(ValueError, match="strategy='fsdp' runs without compile"):
        tiny_config(tmp_path, strategy="fsdp", compile=True)


def test_the_cli_names_the_allowed_strategies(capsys):
    from minillm import cli

    assert cli.main(["train", "--strategy", "zero"]) == 2
    assert "invalid choice: 'zero' (choose from 'ddp', 'fsdp')" in capsys.readouterr().err


def test_train_compiles_the_forward_with_fullgraph(tmp_path, monkeypatch):
    """Dynamo traces the training forward whole (a graph break raises under fullgraph=True).

    The real ``torch.compile`` runs with its "eager" backend: the capture is the same, only the
    minutes of CPU code generation are skipped.
    """
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        calls.append(kwargs)
        return real_compile(model, **{**kwargs, "backend": "eager"})

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", eager_compile)
    config = tiny_config(tmp_path / "compiled", max_steps=3, checkpoint_interval=0)
    compiled = run(config.replace(compile=True))
    plain = run(config.replace(out_dir=str(tmp_path / "plain")))
    assert calls == [{"fullgraph": True}]
    np.testing.assert_allclose(compiled.train_losses, plain.train_losses, rtol=0, atol=1e-6)
