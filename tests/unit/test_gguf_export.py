# ruff: noqa: E402
"""minillm.gguf_export without llama.cpp: the file's keys, tensors, merges and the command line.

The same file run in llama.cpp itself is tests/unit/test_gguf_llamacpp.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from minillm.cli import main  # noqa: E402
from minillm.finetune import CHAT_TEMPLATE, add_chat_tokens
from minillm.finetune.sft import END  # noqa: E402
from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.quantize import dequantize_blocks  # noqa: E402
from minillm.quantize.gguf_export import (
    GGUF_QTYPES,
    export_gguf,
    gguf_chat_template,
    llama_merges,
    tensor_types,
    tokenizer_metadata,
)
from minillm.tokenizer import BPETokenizer  # noqa: E402

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 8


@pytest.fixture(scope="module")
def small():
    tokenizer = BPETokenizer.train(TEXT, 300, pattern="gpt4")
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", n_layer=1, n_embd=64, n_head=2, vocab_size=320, pos_emb="rope"
    )
    return GPT(config).eval(), tokenizer


def fields(path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {name: field.contents() for name, field in reader.fields.items()}, reader


def test_file_holds_hyper_parameters_tokenizer_and_both_uses_of_the_tied_matrix(small, tmp_path):
    model, tokenizer = small
    meta, reader = fields(export_gguf(model, tokenizer, tmp_path / "m.gguf", "f32"))
    c = model.config
    assert meta["general.architecture"] == "gptneox"
    for key, want in {
        "context_length": c.block_size,
        "embedding_length": c.n_embd,
        "block_count": c.n_layer,
        "feed_forward_length": c.ffn_dim,
        "attention.head_count": c.n_head,
        "attention.head_count_kv": c.n_head,
        "rope.dimension_count": c.head_dim,
    }.items():
        assert meta[f"gptneox.{key}"] == want, key
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "llama-bpe"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == c.vocab_size  # padding rows get placeholder tokens
    eot = tokenizer.eot_id
    assert tokens[eot] == "<|endoftext|>" and types[eot] == 3  # control
    assert tokens[ord("a")] == "a" and tokens[ord(" ")] == "Ġ"  # GPT-2's byte spelling
    assert types[tokenizer.vocab_size :] == [5] * (c.vocab_size - tokenizer.vocab_size)
    assert len(set(tokens)) == len(tokens)
    assert meta["tokenizer.ggml.bos_token_id"] == meta["tokenizer.ggml.eos_token_id"] == eot
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.chat_template" not in meta
    tensors = {t.name: t for t in reader.tensors}
    assert {"token_embd.weight", "output.weight"} <= set(tensors)
    np.testing.assert_array_equal(
        np.asarray(tensors["output.weight"].data), model.lm_head.weight.detach().numpy()
    )


def test_merges_hold_every_two_token_split_in_the_merged_tokens_order(small):
    _, tokenizer = small
    ranks = tokenizer._ranks
    merges = llama_merges(tokenizer)
    assert {(a, b) for a, b, _ in tokenizer.merges} <= set(merges)
    spelled = {i: t for t, i in ranks.items()}
    merged = [ranks[spelled[a] + spelled[b]] for a, b in merges]
    assert merged == sorted(merged)
    every = {
        (ranks[t[:k]], ranks[t[k:]])
        for t in ranks
        for k in range(1, len(t))
        if t[:k] in ranks and t[k:] in ranks
    }
    assert set(merges) == every and len(merges) == len(every)


def test_recipes_store_the_types_they_promise(small, tmp_path):
    model, tokenizer = small
    types = tensor_types(model, "mixed")
    assert types["token_embd.weight"] == types["output.weight"] == "q8_0"
    assert types["blk.0.attn_qkv.weight"] == types["blk.0.ffn_down.weight"] == "q4_0"
    assert types["blk.0.attn_norm.weight"] == types["blk.0.attn_qkv.bias"] == "f32"
    _, reader = fields(export_gguf(model, tokenizer, tmp_path / "m.gguf", "mixed"))
    for t in reader.tensors:
        assert t.tensor_type.name == types[t.name].upper(), t.name
    qkv = next(t for t in reader.tensors if t.name == "blk.0.attn_qkv.weight")
    w = model.transformer.h[0].attn.c_attn.weight.detach()
    rows = np.asarray(qkv.data).reshape(w.shape[0], -1)
    assert np.abs(dequantize_blocks(rows, "q4_0") - w.numpy()).max() <= w.abs().max() / 7
    with pytest.raises(ValueError, match="qtype must be one of"):
        tensor_types(model, "q5_k")
    with pytest.raises(ValueError, match="a recipe maps"):
        tensor_types(model, {"linear": "q4_0", "token_embd": "int3", "output": "f32"})


def test_chat_tokenizer_gets_the_template_without_training_markers(small, tmp_path):
    model, tokenizer = small
    chat = add_chat_tokens(tokenizer)
    meta = tokenizer_metadata(chat, model.config.vocab_size)
    assert "{% generation %}" in CHAT_TEMPLATE
    assert meta["chat_template"] == gguf_chat_template(CHAT_TEMPLATE)
    assert "generation" not in meta["chat_template"].replace("add_generation_prompt", "")
    assert meta["eos"] == meta["eot"] == chat.special_tokens[END]
    assert meta["bos"] == chat.eot_id


def test_tokenizers_llama_cpp_cannot_reproduce_are_refused(small, tmp_path):
    model, tokenizer = small
    custom = BPETokenizer.train(TEXT, 280, pattern=r"\w+|\s+|[^\w\s]+")
    with pytest.raises(ValueError, match="llama.cpp has built-in pre-tokenizers only"):
        export_gguf(model, custom, tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="only 100 embeddings"):
        tokenizer_metadata(tokenizer, 100)
    assert not list(tmp_path.iterdir())


def test_export_command_writes_a_gguf_and_rejects_bad_flags(tmp_path, capsys):
    out = tmp_path / "course.gguf"
    assert main(["export", "--checkpoint", "course", "--format", "gguf", "--out", str(out)]) == 0
    meta, _ = fields(out)
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0  # the default qtype
    assert "course.gguf" in capsys.readouterr().out
    bad = [
        (["--format", "gguf", "--out", str(tmp_path / "x.bin")], "must name a .gguf file"),
        (["--format", "gguf", "--out", str(out)], "exists; pass --overwrite"),
        (["--qtype", "q4_0", "--out", str(tmp_path / "hf")], "add --format gguf"),
    ]
    for flags, message in bad:
        assert main(["export", "--checkpoint", "course", *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(f"{name}:" in help_text for name in GGUF_QTYPES), help_text
