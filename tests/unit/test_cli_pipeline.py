"""`minillm prepare`, `minillm train`, `minillm sample`, the course config and course_model's cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_corpus import write_pseudo_verse

from minillm import cli
from minillm import course as train_module
from minillm.course import COURSE_TRAIN, course_config
from minillm.data import load_tokens
from minillm.tokenizer import BPETokenizer
from minillm.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, read_log

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ["n_layer=1", "n_head=2", "n_embd=16", "block_size=32"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Ten distinct documents of pseudo-verse, each long enough for the quality filters."""
    return write_pseudo_verse(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    code = cli.main(
        [
            "prepare",
            "--corpus",
            str(corpus),
            "--out-dir",
            str(out),
            "--vocab-size",
            "300",
            "--fractions",
            "0.8",
            "0.1",
            "0.1",
        ]
    )
    assert code == 0
    return out


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    args = [
        "train",
        "--data-dir",
        str(data),
        "--out-dir",
        str(out),
        "--batch-size",
        "4",
        "--eval-interval",
        "3",
        "--eval-batches",
        "1",
        "--log-interval",
        "1",
        "--checkpoint-interval",
        "3",
        "--warmup-steps",
        "1",
        "--no-progress",
        "--peak-gflops",
        "10",
        "--device",
        "cpu",
    ]
    for override in TINY_MODEL:
        args += ["--model-override", override]
    return args + list(extra)


def test_prepare_writes_splits_tokenizer_and_meta(prepared):
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["vocab_size"] == 300
    assert [meta["splits"][s]["documents"] for s in ("train", "val", "test")] == [8, 1, 1]
    tokenizer = BPETokenizer.load(prepared / "tokenizer.bpe")
    train_ids = load_tokens(prepared / "train.bin")
    assert len(train_ids) == meta["splits"]["train"]["tokens"]
    # documents are separated (and ended) by <|endoftext|>
    assert int((np.asarray(train_ids) == tokenizer.eot_id).sum()) == 8
    first_doc = np.asarray(train_ids[: int(np.argmax(np.asarray(train_ids) == tokenizer.eot_id))])
    assert tokenizer.decode(first_doc.tolist()).startswith("ACT ")


def test_train_resume_and_sample_from_the_command_line(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(prepared, out, "--max-steps", "6", "--learning-rate", "0.01")) == 0
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME)
    assert checkpoint.step == 6 and checkpoint.model_config["n_embd"] == 16
    assert checkpoint.train_config["learning_rate"] == 0.01
    assert (out / "tokenizer.bpe").is_file()
    # a second fresh run into the same folder is refused, without touching the checkpoint
    before = (out / CHECKPOINT_NAME).read_bytes()
    assert cli.main(train_args(prepared, out, "--max-steps", "6")) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    # resume continues the step count
    assert cli.main(train_args(prepared, out, "--max-steps", "9", "--resume")) == 0
    assert load_checkpoint(out / CHECKPOINT_NAME).step == 9
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == list(range(1, 10))
    capsys.readouterr()
    code = cli.main(
        [
            "sample",
            "--checkpoint",
            str(out),
            "--prompt",
            "Thou art",
            "--max-new-tokens",
            "12",
            "--num-samples",
            "2",
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("Thou art") == 2 and "--- sample 2 ---" in printed


def test_command_line_errors_are_one_line_messages(prepared, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("max_steps = 5\nlearning_rte = 0.1\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown training setting(s) ['learning_rte']")
    assert cli.main(train_args(tmp_path / "missing", tmp_path / "run")) == 2
    assert "minillm prepare" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_every_command_and_option_has_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("prepare", "train", "sample"):
        assert name in parser.format_help()
        sub = commands.choices[name]
        assert sub.description
        missing = [a.dest for a in sub._actions if not a.help]
        assert not missing, f"minillm {name}: options without help: {missing}"


def test_the_course_config_file_matches_the_course_default():
    from_file = TrainConfig.from_file(ROOT / "configs" / "course.toml")
    assert from_file == course_config(data_dir="data/course", out_dir="runs/course")
    assert set(COURSE_TRAIN) <= set(from_file.to_dict())


def test_course_model_trains_once_then_loads_from_the_cache(monkeypatch, tmp_path, prepared):
    """course_model() with a tiny stand-in course: first call trains, the second only loads."""
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_module, "SHIPPED_DIR", tmp_path / "nothing-shipped")
    monkeypatch.setattr(train_module, "course_data", lambda verbose=True: prepared)
    tiny = {
        **COURSE_TRAIN,
        "max_steps": 3,
        "eval_interval": 3,
        "eval_batches": 1,
        "peak_gflops": 10.0,
        "model_overrides": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32},
    }
    monkeypatch.setattr(train_module, "COURSE_TRAIN", tiny)
    calls = []
    real_train = train_module.train
    monkeypatch.setattr(
        train_module, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k)
    )
    model, tokenizer = train_module.course_model(verbose=False)
    folder = train_module.course_model_dir()
    assert folder.parent == tmp_path / "cache" and (folder / CHECKPOINT_NAME).is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    again, _ = train_module.course_model(verbose=False)
    assert len(calls) == 1
    for name, tensor in model.state_dict().items():
        assert (again.state_dict()[name] == tensor).all()
    assert tokenizer.vocab_size == model.config.vocab_size == 300
