"""bench/vs_nanogpt.py refuses missing or wrong inputs with one line and exit status 2, fast."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def vs():
    """The benchmark script as a module (``bench/`` on the path for its ``common`` import)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("vs_nanogpt", BENCH / "vs_nanogpt.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture()
def checkout(tmp_path, vs) -> Path:
    """A folder with the files the script runs (empty files: nothing is run by these tests)."""
    root = tmp_path / "nanoGPT"
    for name in vs.NANOGPT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


@pytest.fixture()
def text(tmp_path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 300)
    return path


def one_line_error(vs, capsys, argv) -> str:
    assert vs.main([str(a) for a in argv]) == 2, f"expected exit status 2 for {argv}"
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"expected one line on stderr, got {err!r}"
    return err


def test_missing_checkout(vs, capsys, tmp_path, text):
    err = one_line_error(vs, capsys, ["--nanogpt", tmp_path / "absent", "--text", text])
    assert "--nanogpt" in err and "no such folder" in err, err


def test_arguments_not_given(vs, capsys, checkout, text):
    err = one_line_error(vs, capsys, ["--text", text])
    assert "--nanogpt PATH is required" in err, err
    err = one_line_error(vs, capsys, ["--nanogpt", checkout])
    assert "--text PATH is required" in err, err


def test_folder_that_is_not_nanogpt(vs, capsys, checkout, text):
    (checkout / "model.py").unlink()
    (checkout / "data/shakespeare_char/prepare.py").unlink()
    err = one_line_error(vs, capsys, ["--nanogpt", checkout, "--text", text])
    assert "not a nanoGPT checkout" in err, err
    assert "model.py" in err and "data/shakespeare_char/prepare.py" in err, err
    assert "train.py," not in err, f"train.py exists and must not be listed: {err}"


def test_missing_text(vs, capsys, checkout, tmp_path):
    err = one_line_error(vs, capsys, ["--nanogpt", checkout, "--text", tmp_path / "none.txt"])
    assert "--text" in err and "no such file" in err, err


def test_text_that_is_not_ascii(vs, capsys, checkout, tmp_path):
    path = tmp_path / "utf8.txt"
    path.write_text("Ça ira, ça ira.\n" * 2000, encoding="utf-8")
    err = one_line_error(vs, capsys, ["--nanogpt", checkout, "--text", path])
    assert "not ASCII" in err, err


def test_text_that_is_too_short(vs, capsys, checkout, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be, or not to be.\n")
    err = one_line_error(vs, capsys, ["--nanogpt", checkout, "--text", path])
    assert "21 bytes" in err, err


def test_bad_override_is_caught_before_running_nanogpt(vs, capsys, checkout, text):
    argv = ["--nanogpt", checkout, "--text", text, "--model-override", "n_layers=4"]
    err = one_line_error(vs, capsys, argv)
    assert "n_layers" in err and "n_layer" in err, err
    argv = ["--nanogpt", checkout, "--text", text, "--train-override", "batch_size"]
    err = one_line_error(vs, capsys, argv)
    assert "KEY=VALUE" in err, err


def test_bad_budget(vs, capsys, checkout, text):
    err = one_line_error(vs, capsys, ["--nanogpt", checkout, "--text", text, "--budget", "-5"])
    assert "--budget" in err and "-5" in err, err


def test_assignments_parse_numbers_booleans_and_strings(vs):
    parsed = vs.parse_assignments(
        ["n_layer=4", "learning_rate=6e-3", "bias=false", "norm=rmsnorm"], "-x"
    )
    assert parsed == {"n_layer": 4, "learning_rate": 0.006, "bias": False, "norm": "rmsnorm"}


def test_readme_command_is_unchanged_by_default(vs):
    command = vs.nanogpt_command(None)[1:]
    readme = (
        "train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 "
        "--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 "
        "--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0"
    )
    assert " ".join(command) == readme
    assert "--eval_interval=30" in vs.nanogpt_command(30)


def test_stream_nll_scores_every_token_but_the_first_once(vs):
    # the same logits at every position: a target t costs logsumexp(w) - w[t], so the total
    # tells which tokens were scored (each of tokens[1:] once, the ragged last window included)
    w = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    tokens = torch.tensor([1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 4])

    def logits_of(x, y):
        return w.expand(*x.shape, len(w))

    total, counted = vs.stream_nll(logits_of, tokens, block=4, batch=2)
    cost = torch.logsumexp(w, 0) - w
    expected = cost[tokens[1:]].sum().item()
    assert counted == len(tokens) - 1, f"expected {len(tokens) - 1} scored tokens, got {counted}"
    assert total == pytest.approx(expected), f"expected {expected} nats, got {total}"


def test_parse_log_reads_nanogpts_lines(vs):
    lines = [
        "number of parameters: 0.80M",
        "step 0: train loss 4.2000, val loss 4.1900",
        "iter 0: loss 4.2100, time 50.00ms, mfu -100.00%",
        "iter 1: loss 3.9000, time 40.00ms, mfu -100.00%",
        "step 2: train loss 3.1000, val loss 3.2000",
    ]
    log = vs.parse_log(lines)
    assert log["steps"] == 2 and log["params_printed_millions"] == 0.80
    assert [e["val_loss"] for e in log["evals"]] == [4.19, 3.2]
    with pytest.raises(RuntimeError, match="val loss"):
        vs.parse_log(["iter 0: loss 4.2100, time 50.00ms, mfu -100.00%"])
