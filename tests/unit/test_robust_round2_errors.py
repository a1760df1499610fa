"""Issue 27, class 7: one clear line where a traceback or a misleading line was.

A full disk (a write raising ENOSPC), a corpus in another encoding, a folder where a file is
expected, a cache path that is a file, a deleted shipped-model file: each ends in one ``error:``
line saying what is wrong and what to do, exit 2, never naming an internal temporary file, and
nothing is lost. ``minillm course --retrain``'s model is the one later commands use.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from tiny_corpus import write_pseudo_verse

from minillm import cli, course
from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer
from minillm.train import load_checkpoint, save_checkpoint

TEXT = "to be or not to be, that is the question; whether tis nobler in the mind " * 20


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    tokenizer = BPETokenizer.train(TEXT, 280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=280, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(
        folder / "checkpoint.safetensors",
        model,
        step=0,
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    tokenizer.save(folder / "tokenizer.bpe")
    return folder


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert ".tmp" not in err, f"names an internal temporary file: {err}"
    return err


def _full_disk(monkeypatch) -> None:
    real = safetensors.torch.save_file

    def no_space(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half")  # a partial temporary, as a real full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    assert real is not no_space


def test_a_full_disk_during_quantize_is_one_line_and_loses_nothing(
    run, tmp_path, capsys, monkeypatch
):
    target = tmp_path / "q.safetensors"
    target.write_bytes(b"the previous file")
    _full_disk(monkeypatch)
    ckpt = str(run / "checkpoint.safetensors")
    assert cli.main(["quantize", "--checkpoint", ckpt, "--out", str(target), "--overwrite"]) == 2
    err = _one_line(capsys)
    assert "No space left" in err and str(target) in err and "free some space" in err
    assert target.read_bytes() == b"the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.safetensors"]


def test_a_full_disk_during_train_is_one_line_and_keeps_the_checkpoint(
    tmp_path, capsys, monkeypatch
):
    from minillm.train import prepare

    data = tmp_path / "data"
    prepare(
        data,
        corpus=str(write_pseudo_verse(tmp_path / "c")),
        vocab_size=300,
        fractions=(0.8, 0.1, 0.1),
        verbose=False,
    )
    out = tmp_path / "run"
    config = tmp_path / "tiny.json"
    settings = {
        "data_dir": str(data),
        "out_dir": str(out),
        "max_steps": 2,
        "batch_size": 2,
        "block_size": 8,
        "peak_gflops": 1.0,
        "eval_interval": 2,
        "eval_batches": 1,
        "progress": False,
        "model_overrides": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
    }
    config.write_text(json.dumps(settings))
    args, overrides = ["train", "--config", str(config)], []
    assert cli.main(args + overrides) == 0, capsys.readouterr().err
    before = (out / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    _full_disk(monkeypatch)
    assert cli.main(args + overrides + ["--max-steps", "4", "--resume"]) == 2
    err = _one_line(capsys)
    assert "No space left" in err and "checkpoint.safetensors" in err
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_a_corpus_in_another_encoding_names_no_missing_option(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "play.txt").write_bytes("Ça ira, œuvre à la façon de Molière. ".encode("cp1252") * 50)
    assert cli.main(["prepare", "--corpus", str(corpus), "--out-dir", str(tmp_path / "d")]) == 2
    err = _one_line(capsys)
    assert "utf-8" in err and "iconv" in err
    assert "encoding=" not in err.split("from Python")[0], "names an option the CLI lacks"


def test_a_run_folder_is_taken_where_a_checkpoint_file_is_expected(run, tmp_path, capsys):
    assert (
        cli.main(["quantize", "--checkpoint", str(run), "--out", str(tmp_path / "q.safetensors")])
        == 0
    )
    assert load_checkpoint(run).step == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (
        ["eval", "--checkpoint", str(empty)],
        ["quantize", "--checkpoint", str(empty), "--out", str(tmp_path / "x.safetensors")],
    ):
        capsys.readouterr()
        assert cli.main(command) == 2
        assert "folder without a checkpoint.safetensors" in _one_line(capsys)


def test_a_cache_path_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv("MINILLM_CACHE", str(cache))
    for command in (["course"], ["sample", "--max-new-tokens", "1"]):
        assert cli.main(command) == 2
        err = _one_line(capsys)
        assert "MINILLM_CACHE" in err and "is a file" in err


def test_a_deleted_shipped_file_says_how_to_recover(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "shipped"
    shutil.copytree(course.SHIPPED_DIR, folder)
    (folder / course.SHIPPED_WEIGHTS).unlink()
    monkeypatch.setattr(course, "SHIPPED_DIR", folder)
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    assert cli.main(["sample", "--max-new-tokens", "1", "--device", "cpu"]) == 2
    err = _one_line(capsys)
    assert "missing" in err and "Reinstall" in err and "retrain" in err


def test_a_retrained_course_model_is_the_one_later_commands_use(run, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    retrained = course.course_model_dir()
    shutil.copytree(run, retrained)  # what `minillm course --retrain` leaves in the cache
    model, tokenizer = course.course_model(verbose=False)
    assert (
        model.config.vocab_size == 280
        and tokenizer.vocab_size == BPETokenizer.load(run / "tokenizer.bpe").vocab_size
    )
