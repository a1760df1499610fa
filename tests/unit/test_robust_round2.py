"""Issue 27: reliability, round two.

1. quantized files carry the checkpoints' integrity scheme (checksums, header digest, tokenizer
   fingerprint), refuse an oversized header before allocating, and NaN logits never score;
2. no command overwrites a file without --overwrite, nor ever its own input;
3. one writer per run folder (an OS lock), stale temporaries of dead writers removed;
6. the integrity checks cannot be walked around (deleted checksum keys, a changed train.bin, an
   exported folder that no longer matches its SHA256SUMS).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from minillm import cli
from minillm.cli.evaluate import load_for_eval
from minillm.evaluate import NonFiniteLogitsError, evaluate
from minillm.model import GPT, GPTConfig
from minillm.quantize import load_quantized, quantize_model, save_quantized
from minillm.tokenizer import BPETokenizer
from minillm.train import CheckpointError, load_checkpoint, save_checkpoint
from minillm.utils import (
    IntegrityError,
    RunFolderBusyError,
    RunLock,
    check_output,
    clean_stale_temporaries,
)

ROOT = Path(__file__).resolve().parents[2]
TEXT = "to be or not to be, that is the question; whether tis nobler in the mind " * 20


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 280)


@pytest.fixture(scope="module")
def other_tokenizer() -> BPETokenizer:
    return BPETokenizer.train("the quick brown fox jumps over the lazy dog " * 30, 280)


def tiny_model(vocab: int = 280) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer) -> Path:
    """A run folder: checkpoint + tokenizer, and a quantized file with its tokenizer beside it."""
    folder = tmp_path_factory.mktemp("run")
    model = tiny_model()
    save_checkpoint(
        folder / "checkpoint.safetensors",
        model,
        step=0,
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    tokenizer.save(folder / "tokenizer.bpe")
    save_quantized(
        quantize_model(model, 8),
        folder / "q8.safetensors",
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    return folder


def _contents(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as file:
        header = json.loads(file.metadata()["minillm"])
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    return header, tensors


def _rewrite(path: Path, out: Path, edit_header=None, edit_tensors=None) -> Path:
    header, tensors = _contents(path)
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(out), metadata={"minillm": json.dumps(header)})
    return out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:"), err
    assert "Traceback" not in err
    return err


# --- 1. quantized files -------------------------------------------------------------------------


def test_a_quantized_file_round_trips_verified(run):
    model = load_quantized(run / "q8.safetensors")
    x = torch.randint(0, 280, (1, 8))
    assert torch.isfinite(model(x)[0]).all()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_quantized_file_is_refused_or_harmless(run, tmp_path, position, bit):
    data = bytearray((run / "q8.safetensors").read_bytes())
    i = int(position * len(data))
    data[i] ^= 1 << bit
    path = tmp_path / "flip.safetensors"
    path.write_bytes(bytes(data))
    try:
        model = load_quantized(path)
    except (ValueError, OSError):
        return  # refused with a message
    reference = load_quantized(run / "q8.safetensors")  # loaded: then it must be the same model
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert model.config == reference.config


def test_an_edited_scale_or_n_head_is_refused(run, tmp_path):
    def scale(tensors):
        name = next(n for n in tensors if n.endswith("scale"))
        tensors[name] = tensors[name] * 2

    def n_head(header):
        header["config"]["n_head"] = 4  # same shapes, another model

    for edit in ({"edit_tensors": scale}, {"edit_header": n_head}):
        path = _rewrite(run / "q8.safetensors", tmp_path / "e.safetensors", **edit)
        with pytest.raises(IntegrityError, match="corrupt"):
            load_quantized(path)


def test_a_quantized_file_without_checksums_is_refused_unless_legacy(run, tmp_path):
    def strip(header):
        header.pop("checksums")
        header.pop("header_sha256")

    path = _rewrite(run / "q8.safetensors", tmp_path / "old.safetensors", edit_header=strip)
    with pytest.raises(IntegrityError, match="no checksums"):
        load_quantized(path)
    assert load_quantized(path, legacy=True) is not None


def test_a_huge_claimed_quantized_model_is_refused_at_once(run, tmp_path):
    import time

    def huge(header):
        header["config"].update(n_layer=64, n_embd=8192)
        header["header_sha256"] = __import__(
            "minillm.utils.integrity"
        ).utils.integrity.header_digest(header)

    path = _rewrite(run / "q8.safetensors", tmp_path / "huge.safetensors", edit_header=huge)
    start = time.perf_counter()
    with pytest.raises(IntegrityError, match="nothing was allocated"):
        load_quantized(path)
    assert time.perf_counter() - start < 1.0


def test_a_quantized_file_beside_another_tokenizer_is_refused(
    run, tmp_path, other_tokenizer, capsys
):
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "q8.safetensors").write_bytes((run / "q8.safetensors").read_bytes())
    other_tokenizer.save(folder / "tokenizer.bpe")
    with pytest.raises(IntegrityError, match="not the one"):
        load_for_eval(folder / "q8.safetensors")
    code = cli.main(["eval", "--checkpoint", str(folder / "q8.safetensors"), "--device", "cpu"])
    assert code == 2 and "fingerprint" in _one_error_line(capsys)


def test_the_quantize_command_records_the_fingerprint(run, tmp_path, other_tokenizer, capsys):
    out = tmp_path / "q.safetensors"
    assert (
        cli.main(
            ["quantize", "--checkpoint", str(run / "checkpoint.safetensors"), "--out", str(out)]
        )
        == 0
    )
    other_tokenizer.save(tmp_path / "other.bpe")
    capsys.readouterr()
    code = cli.main(["eval", "--checkpoint", str(out), "--tokenizer", str(tmp_path / "other.bpe")])
    assert code == 2 and "not the one" in _one_error_line(capsys)


class _NaNModel(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.config = GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)

    def forward(self, idx):
        return torch.full((*idx.shape, self.vocab), float("nan")), None


@pytest.mark.parametrize("task", ["cloze", "bias"])
def test_nan_logits_never_score(tokenizer, task):
    with pytest.raises(NonFiniteLogitsError, match="NaN or infinite"):
        evaluate(_NaNModel(tokenizer.vocab_size), tokenizer, [task])


def test_nan_logits_exit_2_from_eval(run, capsys, monkeypatch):
    import minillm.cli.evaluate as ev

    monkeypatch.setattr(
        ev,
        "load_for_eval",
        lambda *a, **k: (_NaNModel(280), BPETokenizer.load(run / "tokenizer.bpe")),
    )
    code = cli.main(
        ["eval", "--checkpoint", str(run / "checkpoint.safetensors"), "--device", "cpu"]
    )
    assert code == 2 and "NaN" in _one_error_line(capsys)
