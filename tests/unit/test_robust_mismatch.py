"""Issue 17, class 2: a model and a tokenizer (or a run and its settings) cannot be mismatched.

Checkpoints record the tokenizer's fingerprint and ``sample``, ``eval`` and resume check it;
``prepare`` refuses a non-empty folder without ``--overwrite``; resume compares the whole model
configuration.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_corpus import write_pseudo_verse

from minillm import cli
from minillm.cli.evaluate import load_for_eval
from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer
from minillm.train import (
    CheckpointError,
    TrainConfig,
    check_tokenizer,
    load_checkpoint,
    save_checkpoint,
    train,
)
from minillm.train import shards as P

CORPUS_A = "the quick brown fox jumps over the lazy dog while the cat sleeps " * 40
CORPUS_B = "a stitch in time saves nine but a rolling stone gathers no moss " * 40


@pytest.fixture(scope="module")
def tokenizers() -> tuple[BPETokenizer, BPETokenizer]:
    return BPETokenizer.train(CORPUS_A, 290), BPETokenizer.train(CORPUS_B, 290)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizers):
    """A run folder: a checkpoint trained with tokenizer A, and A's file beside it."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=290, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(
        folder / "checkpoint.safetensors",
        model,
        step=0,
        tokenizer_fingerprint=tokenizers[0].fingerprint(),
    )
    tokenizers[0].save(folder / "tokenizer.bpe")
    return folder


def test_the_fingerprint_depends_on_the_ids_not_on_the_name(tokenizers, tmp_path):
    a, b = tokenizers
    assert a.vocab_size == b.vocab_size and a.fingerprint() != b.fingerprint()
    renamed = BPETokenizer.load(a.save(tmp_path / "a.bpe"))
    renamed.name = "another name"
    assert renamed.fingerprint() == a.fingerprint()


def test_sample_and_eval_refuse_another_tokenizer(run_dir, tokenizers, tmp_path, capsys):
    other = tokenizers[1].save(tmp_path / "other.bpe")
    argv = ["sample", "--checkpoint", str(run_dir), "--tokenizer", str(other)]
    assert cli.main([*argv, "--max-new-tokens", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the tokenizer") and "fingerprint" in err
    with pytest.raises(CheckpointError, match="not the one"):
        load_for_eval(run_dir / "checkpoint.safetensors", other)


def test_the_right_tokenizer_is_accepted(run_dir, capsys):
    argv = ["sample", "--checkpoint", str(run_dir), "--max-new-tokens", "3", "--device", "cpu"]
    assert cli.main([*argv, "--prompt", "the fox"]) == 0
    assert capsys.readouterr().out.startswith("the fox")
    check_tokenizer(
        load_checkpoint(run_dir / "checkpoint.safetensors"),
        BPETokenizer.load(run_dir / "tokenizer.bpe"),
    )


def test_prepare_refuses_a_non_empty_folder_without_overwrite(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_pseudo_verse(corpus, prefix="doc")  # distinct, so dedup and the filters keep them all
    run = tmp_path / "run"
    run.mkdir()
    (run / "tokenizer.bpe").write_text("the run's own tokenizer\n")
    argv = ["prepare", "--corpus", str(corpus), "--out-dir", str(run), "--vocab-size", "300"]
    assert cli.main([*argv, "--fractions", "0.8", "0.1", "0.1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "tokenizer.bpe").read_text() == "the run's own tokenizer\n"
    assert cli.main([*argv, "--fractions", "0.8", "0.1", "0.1", "--overwrite"]) == 0
    assert BPETokenizer.load(run / "tokenizer.bpe").vocab_size == 300
    assert (
        P.verify_data_dir(run, deep=True).fingerprint() == P.read_meta(run)["tokenizer_fingerprint"]
    )


def _tiny(n_head: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=n_head, n_embd=16))


def test_resume_refuses_a_different_model_config_with_the_same_shapes(tmp_path):
    tokens = (np.arange(2000) % 20).astype(np.uint16)
    config = TrainConfig(
        out_dir=str(tmp_path / "run"),
        max_steps=4,
        batch_size=2,
        eval_interval=2,
        eval_batches=1,
        checkpoint_interval=2,
        progress=False,
        peak_gflops=10.0,
    )
    train(config, model=_tiny(2), train_tokens=tokens, val_tokens=tokens, stop_after=2)
    with pytest.raises(CheckpointError, match="n_head: 2 in the checkpoint, 4 now"):
        train(config, model=_tiny(4), train_tokens=tokens, val_tokens=tokens, resume=True)
    result = train(config, model=_tiny(2), train_tokens=tokens, val_tokens=tokens, resume=True)
    assert result.step == 4
