"""minillm quantize: a checkpoint in, a quantized safetensors or .gguf file out."""

from __future__ import annotations

import argparse

import pytest
import torch

from minillm import quantize
from minillm.cli import quantize as quantize_cli
from minillm.model import GPT, GPTConfig
from minillm.train import save_checkpoint


def run(argv):
    parser = argparse.ArgumentParser()
    quantize_cli.add_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("course", n_layer=1))
    return save_checkpoint(tmp_path / "ckpt.safetensors", model, step=0), model


def test_quantize_command_writes_a_loadable_model(checkpoint, tmp_path, capsys):
    path, model = checkpoint
    out = tmp_path / "q" / "int4.safetensors"
    assert (
        run(
            [
                "quantize",
                "--checkpoint",
                str(path),
                "--bits",
                "4",
                "--group-size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "bytes on disk" in capsys.readouterr().out
    loaded = quantize.load_quantized(out)
    ids = torch.randint(0, 2048, (1, 16))
    reference = quantize.quantize_model(model, 4, 32)
    assert torch.equal(loaded(ids)[0], reference(ids)[0])


def test_quantize_command_writes_gguf(checkpoint, tmp_path):
    pytest.importorskip("gguf")
    from minillm.quantize import read_gguf

    path, _ = checkpoint
    out = tmp_path / "model.gguf"
    assert run(["quantize", "--checkpoint", str(path), "--bits", "8", "--out", str(out)]) == 0
    assert read_gguf(out)["token_embd.weight"][0] == "Q8_0"


def test_quantize_command_rejects_a_bad_group_size(checkpoint, tmp_path):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="does not divide"):
        run(
            [
                "quantize",
                "--checkpoint",
                str(path),
                "--bits",
                "4",
                "--group-size",
                "40",
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )
