"""Issue 17, class 1: corrupt files are refused, never loaded silently.

Checkpoints carry checksums of every tensor and of their header; random bit flips anywhere in
the file are either refused or provably harmless (what loads equals what was saved). Tokenizer
files are checked for internal consistency, and a pattern that drops characters is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer
from minillm.train import (
    CheckpointError,
    checkpoint_is_valid,
    configure_optimizer,
    load_checkpoint,
    resave_checkpoint,
    save_checkpoint,
)

TEXT = "the quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs. " * 20


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 290)


def tiny_model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0)
    return GPT(config)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer) -> Path:
    """A checkpoint with weights, AdamW state (one step taken) and a tokenizer fingerprint."""
    model = tiny_model()
    optimizer = configure_optimizer(model, learning_rate=1e-3, weight_decay=0.1)
    x = torch.randint(0, 32, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "c.safetensors"
    return save_checkpoint(
        path, model, step=1, optimizer=optimizer, tokenizer_fingerprint=tokenizer.fingerprint()
    )


def _contents(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as file:
        header = json.loads(file.metadata()["minillm"])
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    return header, tensors


def _rewrite(path: Path, out: Path, edit_header=None, edit_tensors=None) -> Path:
    """Write a copy of a checkpoint with its header and/or tensors edited (checksums kept)."""
    header, tensors = _contents(path)
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(out), metadata={"minillm": json.dumps(header)})
    return out


def _legacy(path: Path, out: Path, edit_header=None, edit_tensors=None) -> Path:
    """A copy as the previous minillm wrote it: no checksums at all."""

    def strip(header):
        header.pop("checksums")
        header.pop("header_sha256")
        if edit_header:
            edit_header(header)

    return _rewrite(path, out, strip, edit_tensors)


def _same_checkpoint(a, b) -> bool:
    if (a.step, a.model_config, a.tokenizer_fingerprint) != (
        b.step,
        b.model_config,
        b.tokenizer_fingerprint,
    ):
        return False
    if a.model_state.keys() != b.model_state.keys():
        return False
    if not all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state):
        return False
    sa, sb = a.optimizer_state["state"], b.optimizer_state["state"]
    return sa.keys() == sb.keys() and all(
        sa[i].keys() == sb[i].keys()
        and all(
            torch.equal(sa[i][k], sb[i][k]) if torch.is_tensor(sa[i][k]) else sa[i][k] == sb[i][k]
            for k in sa[i]
        )
        for i in sa
    )


# --- checkpoints: random bit flips -----------------------------------------------------------


def _data_start(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_bit_flip_is_refused_or_harmless(saved, tmp_path_factory, data):
    raw = saved.read_bytes()
    position = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    flipped = bytearray(raw)
    flipped[position // 8] ^= 1 << (position % 8)
    path = tmp_path_factory.mktemp("flip") / "c.safetensors"
    path.write_bytes(bytes(flipped))
    try:
        loaded = load_checkpoint(path)
    except CheckpointError:
        return  # refused: fine
    # loaded: only harmless if everything that matters is bit-identical to the original
    assert _same_checkpoint(loaded, load_checkpoint(saved)), f"bit {position} changed the load"
    assert loaded.verified


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_bit_flip_in_tensor_data_is_refused(saved, tmp_path_factory, data):
    raw = saved.read_bytes()
    start = _data_start(raw)
    position = data.draw(st.integers(start * 8, len(raw) * 8 - 1), label="bit")
    flipped = bytearray(raw)
    flipped[position // 8] ^= 1 << (position % 8)
    path = tmp_path_factory.mktemp("flip") / "c.safetensors"
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt|NaN or infinite"):
        load_checkpoint(path)


def test_a_changed_weight_names_the_tensor(saved, tmp_path):
    def poke(tensors):
        tensors["model/transformer.wte.weight"] = tensors["model/transformer.wte.weight"].clone()
        tensors["model/transformer.wte.weight"][0, 0] = -6.5e36

    path = _rewrite(saved, tmp_path / "c.safetensors", edit_tensors=poke)
    with pytest.raises(CheckpointError, match="corrupt: tensor model/transformer.wte.weight"):
        load_checkpoint(path)


def test_an_edited_header_is_refused(saved, tmp_path):
    path = _rewrite(saved, tmp_path / "c.safetensors", lambda h: h.update(step=999))
    with pytest.raises(CheckpointError, match="header's checksum"):
        load_checkpoint(path)


def test_json_whitespace_in_the_header_is_harmless(saved, tmp_path):
    header, tensors = _contents(saved)
    out = tmp_path / "c.safetensors"
    save_file(tensors, str(out), metadata={"minillm": json.dumps(header, indent=3)})
    assert _same_checkpoint(load_checkpoint(out), load_checkpoint(saved))


# --- checkpoints: content checks that hold without checksums too ----------------------------


def test_an_infinite_weight_is_refused_even_with_valid_checksums(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")
    path = save_checkpoint(tmp_path / "c.safetensors", model, step=0)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)


def test_a_renamed_optimizer_tensor_is_refused_at_load(saved, tmp_path):
    def rename(tensors):
        tensors["optimizer/0/exp_avh"] = tensors.pop("optimizer/0/exp_avg")

    path = _legacy(saved, tmp_path / "c.safetensors", edit_tensors=rename)
    with pytest.raises(CheckpointError, match="renamed or missing"):
        load_checkpoint(path, legacy=True)


def test_a_missing_optimizer_tensor_is_refused_at_load(saved, tmp_path):
    path = _legacy(
        saved, tmp_path / "c.safetensors", edit_tensors=lambda t: t.pop("optimizer/1/exp_avg_sq")
    )
    with pytest.raises(CheckpointError, match="optimizer state"):
        load_checkpoint(path, legacy=True)


def test_a_header_claiming_a_huge_model_is_refused_before_allocating(saved, tmp_path):
    def grow(header):
        header["model_config"].update(n_layer=100_000, n_embd=65_536)  # ~5e15 parameters

    path = _legacy(saved, tmp_path / "c.safetensors", grow)
    with pytest.raises(CheckpointError, match="nothing was allocated"):
        load_checkpoint(path, legacy=True).build_model()


def test_a_truncated_file_is_refused(saved, tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


# --- checkpoints: files of the previous version -----------------------------------------------


def test_a_checkpoint_without_checksums_loads_only_as_legacy(saved, tmp_path, capsys):
    """Issue 27: deleting the checksum keys is refused; only an explicit legacy=True loads it."""
    path = _legacy(saved, tmp_path / "old.safetensors")
    with pytest.raises(CheckpointError, match="no checksums"):
        load_checkpoint(path)
    first = load_checkpoint(path, legacy=True)
    second = load_checkpoint(path, legacy=True)
    err = capsys.readouterr().err
    assert err.count("has no checksums") == 1, err
    assert not first.verified and _same_checkpoint(first, second)
    assert not checkpoint_is_valid(path)
    resave_checkpoint(path)
    assert load_checkpoint(path).verified and checkpoint_is_valid(path)
    assert _same_checkpoint(load_checkpoint(path), load_checkpoint(saved))


# --- tokenizer files ----------------------------------------------------------------------------


def _edited(tmp_path: Path, tokenizer: BPETokenizer, edit) -> Path:
    path = tokenizer.save(tmp_path / "tok.bpe")
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join(edit(lines)), encoding="utf-8")
    return path


def _token_line(lines: list[str], token_id: int) -> int:
    return lines.index("tokens " + lines[3].split()[1]) + 1 + token_id


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_swapped_ranks_are_refused(tokenizer, tmp_path_factory, data):
    n = len(tokenizer._ranks)  # ordinary ids 0..n-1
    first = data.draw(st.integers(256, n - 2), label="first id")
    second = data.draw(st.integers(first + 1, n - 1), label="second id")

    def swap(lines):
        a, b = _token_line(lines, first), _token_line(lines, second)
        hex_a, hex_b = lines[a].split()[1], lines[b].split()[1]
        lines[a], lines[b] = f"{first} {hex_b}", f"{second} {hex_a}"
        return lines

    path = _edited(tmp_path_factory.mktemp("tok"), tokenizer, swap)
    with pytest.raises(ValueError, match="invalid tokenizer") as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)


def test_a_gap_in_the_ids_is_refused(tokenizer, tmp_path):
    def gap(lines):
        i = _token_line(lines, 288)  # the last ordinary token gets an id past the end
        lines[i] = f"{5000} {lines[i].split()[1]}"
        return lines

    with pytest.raises(ValueError, match="without gaps"):
        BPETokenizer.load(_edited(tmp_path, tokenizer, gap))


def test_specials_must_follow_the_vocabulary(tokenizer, tmp_path):
    path = _edited(tmp_path, tokenizer, lambda ls: [*ls[:-2], '9999 "<|endoftext|>"', ""])
    with pytest.raises(ValueError, match="must follow the vocabulary"):
        BPETokenizer.load(path)


def test_a_merge_that_uses_a_later_token_is_refused(tokenizer, tmp_path):
    def reorder(lines):
        start = lines.index(f"merges {len(tokenizer.merges)}") + 1
        lines[start], lines[start + 20] = lines[start + 20], lines[start]
        return lines

    with pytest.raises(ValueError, match="before a merge has made it|merge order"):
        BPETokenizer.load(_edited(tmp_path, tokenizer, reorder))


def test_a_pattern_that_drops_characters_is_refused_in_files_and_training(tokenizer, tmp_path):
    path = _edited(tmp_path, tokenizer, lambda ls: [ls[0], ls[1], 'pattern "\\\\w+"', *ls[3:]])
    with pytest.raises(ValueError, match="does not cover all text") as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="does not cover all text"):
        BPETokenizer.train("hello, world!", 300, pattern=r"\w+")


def test_a_valid_file_still_loads_and_encodes_the_same(tokenizer, tmp_path):
    loaded = BPETokenizer.load(tokenizer.save(tmp_path / "tok.bpe"))
    assert loaded.encode(TEXT) == tokenizer.encode(TEXT)
    assert loaded.fingerprint() == tokenizer.fingerprint()
    gpt2 = BPETokenizer.gpt2()
    assert BPETokenizer.load(gpt2.save(tmp_path / "gpt2.bpe")).encode(TEXT) == gpt2.encode(TEXT)
