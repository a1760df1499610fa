"""minillm.train under torchrun: two CPU processes (gloo) train one model; only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from minillm.checkpoint import CHECKPOINT_NAME, load_checkpoint
from minillm.runlog import read_log

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch
    from minillm.model import GPT, GPTConfig
    from minillm.train import train, TrainConfig

    out_dir = sys.argv[1]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16))
    tokens = (np.arange(4000) % 20).astype(np.uint16)
    config = TrainConfig(out_dir=out_dir, max_steps=6, batch_size=4, grad_accum_steps=2,
                         eval_interval=3, eval_batches=1, log_interval=1, checkpoint_interval=3,
                         progress=False, peak_gflops=10.0, device="cpu")
    result = train(config, model=model, train_tokens=tokens, val_tokens=tokens[:500])
    rank = int(os.environ["RANK"])
    weights = [p.detach().double().sum().item() for p in result.model.parameters()]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"weights": weights, "losses": result.train_losses}, f)
    """
)


@pytest.mark.slow
def test_two_ranks_stay_in_sync_and_only_rank_zero_logs_and_saves(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # DDP averages the gradients, so both ranks hold the same weights and log the same mean loss
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    records = read_log(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME)
    assert checkpoint.step == 6 and checkpoint.data_state["world_size"] == 2
    assert checkpoint.data_state["tokens_seen"] == 6 * 4 * 16 * 2 * 2  # steps·B·T·accum·ranks
    assert len(checkpoint.rng_states) == 2  # every rank's batch stream, for an exact resume
    assert not torch_equal(checkpoint.rng_states[0]["batch"], checkpoint.rng_states[1]["batch"])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
