"""``minillm eval`` on the output of ``minillm quantize`` (issue 13, item 8)."""

from __future__ import annotations

import json

import torch

from minillm import quantize
from minillm.cli import main
from minillm.evaluate import evaluate, resolve_task
from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer
from minillm.train import save_checkpoint


def test_eval_reads_a_quantized_model_and_scores_it_as_loaded(tmp_path, capsys):
    text = "to be or not to be, that is the question " * 30
    tokenizer = BPETokenizer.train(text, 280, special_tokens=["<|endoftext|>"])
    tokenizer.save(tmp_path / "tokenizer.bpe")
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("course", vocab_size=tokenizer.vocab_size, n_layer=1))
    ckpt = save_checkpoint(
        tmp_path / "checkpoint.safetensors",
        model,
        step=0,
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    out = tmp_path / "q" / "int4.safetensors"
    argv = ["quantize", "--checkpoint", str(ckpt), "--bits", "4", "--group-size", "32"]
    assert main([*argv, "--out", str(out)]) == 0
    report = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(out), "--tasks", "cloze", "--json", str(report)]) == 0
    assert "cloze" in capsys.readouterr().out
    got = json.loads(report.read_text())
    want = evaluate(quantize.load_quantized(out), tokenizer, [resolve_task("cloze", tokenizer)])
    assert json.dumps(got["tasks"]["cloze"]["metrics"], sort_keys=True) == json.dumps(
        want.to_dict()["tasks"]["cloze"]["metrics"], sort_keys=True
    )


def test_a_quantized_model_without_its_tokenizer_is_one_error_line(tmp_path, capsys):
    torch.manual_seed(0)
    out = quantize.save_quantized(
        quantize.quantize_model(GPT(GPTConfig.preset("course", n_layer=1)), 8),
        tmp_path / "alone.safetensors",
    )
    assert main(["eval", "--checkpoint", str(out), "--tasks", "cloze"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no tokenizer"), err
