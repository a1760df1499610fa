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
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_corpus import write_pseudo_verse

from minillm import cli
from minillm.cli.evaluate import load_for_eval
from minillm.evaluate import NonFiniteLogitsError, evaluate
from minillm.model import GPT, GPTConfig
from minillm.quantize import load_quantized, quantize_model, save_quantized
from minillm.tokenizer import BPETokenizer
from minillm.train import load_checkpoint, save_checkpoint
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


# --- 2. no command destroys its own input -------------------------------------------------------


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    exists=st.sampled_from(["file", "full-dir", "empty-dir", "none"]),
    overwrite=st.booleans(),
    is_input=st.booleans(),
)
def test_check_output_refuses_what_would_lose_data(tmp_path_factory, exists, overwrite, is_input):
    folder = tmp_path_factory.mktemp("out")
    source = folder / "in.safetensors"
    source.write_bytes(b"input")
    target = source if is_input else folder / "target"
    if not is_input and exists == "file":
        target.write_bytes(b"old")
    elif not is_input and exists in ("full-dir", "empty-dir"):
        target.mkdir()
        if exists == "full-dir":
            (target / "keep").write_text("mine")
    if is_input:
        with pytest.raises(ValueError, match="destroy"):
            check_output(target, inputs=[source], overwrite=overwrite)
    elif exists in ("file", "full-dir") and not overwrite:
        with pytest.raises(FileExistsError, match="--overwrite"):
            check_output(target, inputs=[source], overwrite=overwrite)
    else:
        assert check_output(target, inputs=[source], overwrite=overwrite) == target
    assert source.read_bytes() == b"input"
    # a folder holding the input is refused too (export --out <the run folder> --overwrite)
    with pytest.raises(ValueError, match="destroy"):
        check_output(folder, inputs=[source], overwrite=True)


@pytest.mark.parametrize("overwrite", [False, True])
def test_quantize_never_overwrites_its_checkpoint(run, tmp_path, capsys, overwrite):
    folder = tmp_path / "r"
    folder.mkdir()
    ckpt = folder / "checkpoint.safetensors"
    ckpt.write_bytes((run / "checkpoint.safetensors").read_bytes())
    before = ckpt.read_bytes()
    args = ["quantize", "--checkpoint", str(ckpt), "--out", str(ckpt)]
    assert cli.main(args + (["--overwrite"] if overwrite else [])) == 2
    assert "destroy" in _one_error_line(capsys)
    assert ckpt.read_bytes() == before
    load_checkpoint(ckpt)  # still resumable


def test_quantize_and_export_need_overwrite_for_an_existing_target(run, tmp_path, capsys):
    target = tmp_path / "old.safetensors"
    target.write_bytes(b"someone's file")
    ckpt = str(run / "checkpoint.safetensors")
    assert cli.main(["quantize", "--checkpoint", ckpt, "--out", str(target)]) == 2
    assert "--overwrite" in _one_error_line(capsys) and target.read_bytes() == b"someone's file"
    assert cli.main(["quantize", "--checkpoint", ckpt, "--out", str(target), "--overwrite"]) == 0
    assert load_quantized(target) is not None
    for out in (str(target), str(run)):  # a file, and the folder holding the checkpoint
        before = sorted(p.name for p in Path(out).parent.iterdir())
        assert cli.main(["export", "--checkpoint", ckpt, "--out", out]) == 2
        _one_error_line(capsys)
        assert sorted(p.name for p in Path(out).parent.iterdir()) == before
    assert cli.main(["export", "--checkpoint", ckpt, "--out", str(run), "--overwrite"]) == 2
    assert "destroy" in _one_error_line(capsys)
    load_checkpoint(ckpt)


# --- 3. one writer per run folder ---------------------------------------------------------------

HOLD = "import sys, time; from minillm.utils import RunLock\nwith RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)\n"


def _holder(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _tokens(n: int = 4000):
    import numpy as np

    return (np.arange(n) % 50).astype(np.uint16)


def _config(out: Path, **changes):
    from minillm.train import TrainConfig

    settings = dict(
        out_dir=str(out),
        max_steps=2,
        batch_size=2,
        block_size=8,
        eval_interval=2,
        eval_batches=1,
        checkpoint_interval=0,
        progress=False,
        peak_gflops=1.0,
        model_preset="course",
        model_overrides=dict(vocab_size=300, block_size=8, n_layer=1, n_head=2, n_embd=16),
    )
    settings.update(changes)
    return TrainConfig(**settings)


def test_a_second_writer_is_refused_and_kill_9_releases_the_lock(tmp_path, capsys):
    from minillm.train import train

    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        with pytest.raises(RunFolderBusyError, match=f"pid {holder.pid}"):
            train(_config(folder), train_tokens=_tokens(), val_tokens=_tokens(800))
        code = cli.main(
            ["train", "--out-dir", str(folder), "--max-steps", "1", "--peak-gflops", "1"]
        )
        assert code == 2 and "another minillm run" in _one_error_line(capsys)
        assert not (folder / "checkpoint.safetensors").exists()
    finally:
        holder.kill()  # SIGKILL: the OS drops the flock
        holder.wait()
    with RunLock(folder):
        pass


def test_a_run_removes_the_temporaries_of_dead_writers(tmp_path):
    from minillm.train import train

    folder = tmp_path / "run"
    folder.mkdir()
    dead = folder / ".checkpoint.safetensors.999999999.tmp"
    dead.write_bytes(b"half a checkpoint")
    alive = folder / f".checkpoint.safetensors.{os.getppid()}.tmp"
    alive.write_bytes(b"someone else's")
    train(_config(folder), train_tokens=_tokens(), val_tokens=_tokens(800))
    assert not dead.exists() and alive.exists()
    assert load_checkpoint(folder / "checkpoint.safetensors").verified
    assert clean_stale_temporaries(folder) == []


# --- 6. integrity checks that cannot be walked around -------------------------------------------


def test_a_changed_train_bin_of_the_same_size_is_refused(tmp_path):
    from minillm.train import prepare, train

    corpus = write_pseudo_verse(tmp_path / "corpus")
    data = tmp_path / "data"
    prepare(data, corpus=str(corpus), vocab_size=300, fractions=(0.8, 0.1, 0.1), verbose=False)
    shard = data / "train.bin"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1  # same size, other tokens
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        train(_config(tmp_path / "run", data_dir=str(data)))


def test_an_exported_folder_that_no_longer_matches_its_manifest_is_refused(run, tmp_path):
    pytest.importorskip("transformers")
    from minillm.release import export_hf, from_pretrained

    model, tokenizer = load_for_eval(run / "checkpoint.safetensors")
    out = tmp_path / "hf"
    export_hf(model, tokenizer, out)
    assert from_pretrained(out) is not None
    config = json.loads((out / "config.json").read_text())
    config["layer_norm_epsilon"] = 0.5
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="SHA256SUMS"):
        from_pretrained(out)


# --- 5. generation linear in its length ---------------------------------------------------------


def _reference_generate(model, idx, n, generator, **settings):
    """The loop before issue 27 (the whole history concatenated every step): the same tokens."""
    from minillm.model.sampling import cached_steps
    from minillm.serve.generation import apply_processors, choose_next, make_processors

    processors = make_processors(**settings)
    out, steps = [idx], cached_steps(model, idx)
    logits = next(steps)
    for step in range(n):
        scores = apply_processors(processors, torch.cat(out, 1), logits)
        out.append(choose_next(scores, settings.get("temperature") == 0, generator))
        if step < n - 1:
            logits = steps.send(out[-1])
    return torch.cat(out, 1)


@settings(max_examples=10, deadline=None)
@given(
    temperature=st.sampled_from([0.0, 0.7, 1.0, 1.5]),
    top_k=st.sampled_from([None, 1, 5]),
    repetition_penalty=st.sampled_from([1.0, 1.3]),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_generate_gives_the_tokens_of_the_reference_loop(
    temperature, top_k, repetition_penalty, n, seed
):
    from minillm.serve.generation import generate

    model = tiny_model(64).eval()
    prompt = torch.randint(0, 64, (2, 3), generator=torch.Generator().manual_seed(seed))
    settings_ = dict(temperature=temperature, top_k=top_k, repetition_penalty=repetition_penalty)
    with torch.no_grad():
        got = generate(model, prompt, n, generator=torch.Generator().manual_seed(seed), **settings_)
        want = _reference_generate(
            model, prompt, n, torch.Generator().manual_seed(seed), **settings_
        )
    assert torch.equal(got, want)


def test_generate_with_processors_does_linear_work(monkeypatch):
    """Count the elements concatenated: the old loop joined the whole history every step."""
    from minillm.serve.generation import generate

    model = tiny_model(64).eval()
    joined = []
    real_cat = torch.cat

    def counting_cat(tensors, *args, **kwargs):
        out = real_cat(tensors, *args, **kwargs)
        joined.append(out.numel())
        return out

    monkeypatch.setattr(torch, "cat", counting_cat)
    n = 600
    with torch.no_grad():
        generate(model, torch.zeros(1, 1, dtype=torch.long), n, 0.8, 50)
    block = model.config.block_size
    assert sum(joined) <= 2 * block * n, f"{sum(joined):,} elements joined for {n} tokens"
