"""Issue 17, class 4: nothing a user can type ends in a Python traceback.

A sweep of bad invocations, run in-process through ``minillm.cli.main``: each must exit 2 with
exactly one line on stderr, starting with ``error:``, and no traceback. A closed output pipe is
tested with real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm import cli
from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer
from minillm.train import read_log, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A folder with a tiny run (checkpoint + tokenizer), a plain file and bad config files."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    tokenizer = BPETokenizer.train("to be or not to be, that is the question " * 30, 280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=280, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(
        run / "checkpoint.safetensors", model, step=0, tokenizer_fingerprint=tokenizer.fingerprint()
    )
    tokenizer.save(run / "tokenizer.bpe")
    (root / "file.txt").write_text("not a folder\n")
    (root / "bad.toml").write_text("max_steps = [unclosed\n")
    (root / "bad.json").write_text('{"max_steps": 3,,}\n')
    (root / "list.json").write_text("[1, 2]\n")
    (root / "garbage.safetensors").write_bytes(b"\x00" * 64)
    (root / "bad_mc.jsonl").write_text('{"context": "a", "choices": "xy", "answer": 0}\n')
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("mine\n")
    return root


def sweep_cases(p: Path) -> list[list[str]]:
    run, file = str(p / "run"), str(p / "file.txt")
    sample = ["sample", "--checkpoint", run, "--device", "cpu", "--max-new-tokens", "2"]
    train = ["train", "--data-dir", str(p / "nowhere"), "--out-dir", str(p / "out")]
    ev = ["eval", "--checkpoint", f"{run}/checkpoint.safetensors", "--device", "cpu"]
    return [
        [*sample, "--temperature", "nan"],
        [*sample, "--temperature", "-1"],
        [*sample, "--temperature", "inf"],
        [*sample, "--temperature", "warm"],
        [*sample, "--top-k", "0"],
        [*sample, "--num-samples", "0"],
        [*sample, "--max-new-tokens", "-3"],
        [*sample, "--seed", str(2**70)],
        [*sample, "--seed", "-1"],
        [*sample, "--no-such-flag"],
        ["sample", "--checkpoint", str(p / "garbage.safetensors")],
        ["sample", "--checkpoint", run, "--tokenizer", file],
        [*train, "--peak-gflops", "0"],
        [*train, "--peak-gflops", "-2"],
        [*train, "--peak-gflops", "nan"],
        [*train, "--learning-rate", "inf"],
        [*train, "--beta1", "nan"],
        [*train, "--seed", str(2**64)],
        [*train, "--max-steps", "many"],
        [*train, "--config", str(p / "bad.toml")],
        [*train, "--config", str(p / "bad.json")],
        [*train, "--config", str(p / "list.json")],
        [*train, "--config", str(p / "nowhere.toml")],
        ["train", "--out-dir", file, "--peak-gflops", "1"],
        ["train", "--out-dir", f"{file}/below", "--peak-gflops", "1"],
        ["prepare", "--out-dir", file],
        ["prepare", "--out-dir", str(p / "nonempty")],
        ["prepare", "--out-dir", str(p / "new"), "--fractions", "nan", "0.1", "0.1"],
        ["prepare", "--out-dir", str(p / "new"), "--seed", str(2**70)],
        ["prepare", "--out-dir", str(p / "new"), "--vocab-size", "12"],
        ["prepare", "--out-dir", str(p / "new"), "--corpus", str(p / "nowhere")],
        [*ev, "--json", str(p)],
        [*ev, "--json", f"{file}/report.json"],
        [*ev, "--tasks", f"mc:{p / 'bad_mc.jsonl'}"],
        [*ev, "--tasks", "no-such-task"],
        [*ev, "--stride", "0"],
        ["eval", "--checkpoint", str(p / "garbage.safetensors")],
        ["no-such-command"],
    ]


def test_every_bad_invocation_is_one_error_line(place, capsys, monkeypatch):
    monkeypatch.chdir(place)
    failures = []
    for argv in sweep_cases(place):
        code = cli.main(argv)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        ok = (
            code == 2
            and len(lines) == 1
            and lines[0].startswith("error:")
            and "Traceback" not in captured.err
        )
        if not ok:
            failures.append(f"{argv[:1] + argv[-2:]}: exit {code}, stderr {captured.err!r}")
    assert not failures, "\n".join(failures)


def test_config_errors_name_the_file_and_its_format(place, capsys):
    for name, kind in (("bad.toml", "TOML"), ("bad.json", "JSON")):
        cli.main(["train", "--config", str(place / name)])
        err = capsys.readouterr().err
        assert str(place / name) in err and f"not valid {kind}" in err, err


def test_output_folders_are_checked_before_any_work(place, capsys, monkeypatch):
    import minillm.cli.evaluate as E

    monkeypatch.setattr(E, "load_for_eval", lambda *a: pytest.fail("the model was loaded first"))
    ev = ["eval", "--checkpoint", str(place / "run" / "checkpoint.safetensors")]
    assert cli.main([*ev, "--json", str(place)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_world_size_that_is_not_a_number(place, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    assert cli.main(["train", "--out-dir", str(place / "out"), "--peak-gflops", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: environment variable WORLD_SIZE='abc'")


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    import minillm.cli.train as T

    def exhausted(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(T, "_train_cli", exhausted)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "--batch-size" in err


def test_a_torn_last_log_record_is_skipped_and_said(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text('{"kind": "eval", "step": 0, "val_loss": 3.2}\n{"kind": "train", "st')
    assert read_log(log) == [{"kind": "eval", "step": 0, "val_loss": 3.2}]
    assert "torn last record" in capsys.readouterr().err
    log.write_text('{"kind": "eval"\n{"kind": "train", "step": 1}\n')
    with pytest.raises(ValueError, match="log.jsonl:1"):
        read_log(log)


def _pipe_to_head(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    producer = subprocess.Popen(
        [sys.executable, "-m", "minillm", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    producer.stdout.readline()  # read one line, then close the pipe as `head -1` does
    producer.stdout.close()
    err = producer.stderr.read().decode()
    producer.wait(timeout=300)
    return subprocess.CompletedProcess(argv, producer.returncode, "", err)


def test_a_closed_pipe_ends_quietly(place):
    argv = ["sample", "--checkpoint", str(place / "run"), "--device", "cpu"]
    result = _pipe_to_head(*argv, "--num-samples", "400", "--max-new-tokens", "60")  # > 64 kB
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, (
        result.stderr
    )
    assert result.returncode in (0, 1), result.stderr
