"""minillm.course: the shipped course model, its card, and a cache that heals itself."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from minillm import course
from minillm.model import PRESETS
from minillm.train import CHECKPOINT_NAME, COURSE_DATA, TOKENIZER_NAME, CheckpointError


@pytest.fixture(scope="module")
def card():
    found = course.shipped_card()
    assert found is not None, f"no shipped course model in {course.SHIPPED_DIR}"
    return found


def test_the_shipped_files_match_their_card(card):
    assert course.file_sha256(course.SHIPPED_DIR / course.SHIPPED_WEIGHTS) == card["weights_sha256"]
    assert course.file_sha256(course.SHIPPED_DIR / TOKENIZER_NAME) == card["tokenizer_sha256"]
    size = (course.SHIPPED_DIR / course.SHIPPED_WEIGHTS).stat().st_size
    assert size <= 10_000_000, f"the shipped weights take {size:,} bytes, more than 10 MB"


def test_the_shipped_model_is_the_course_recipe(card):
    model, tokenizer = course.load_shipped_model()
    expected = {**PRESETS["course"], "vocab_size": COURSE_DATA["vocab_size"]}
    for key, value in expected.items():
        assert card["model_config"][key] == value, f"{key}: card {card['model_config'][key]}"
        assert getattr(model.config, key) == value
    for key, value in course.COURSE_TRAIN.items():
        assert card["train_config"][key] == value, f"{key}: card {card['train_config'][key]}"
    assert card["data"] == COURSE_DATA
    assert tokenizer.vocab_size == model.config.vocab_size
    assert card["parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_the_shipped_model_scores_what_its_card_says_with_the_course_tokenizer(card):
    data_dir = course.course_data(verbose=False)
    # the tokenizer the course data is encoded with is the one the model was trained with
    from minillm.tokenizer import BPETokenizer

    fresh = BPETokenizer.load(data_dir / TOKENIZER_NAME).fingerprint()
    assert fresh == card["tokenizer_fingerprint"], "course_data() made another tokenizer"
    model, _ = course.load_shipped_model()  # course_model() would prefer a retrained one
    score = course.split_bits_per_byte(model, data_dir)
    recorded = card["val"]["bits_per_byte"]
    assert abs(score["bits_per_byte"] - recorded) < 1e-3, (
        f"the card records {recorded:.5f} bits/byte, the shipped weights score "
        f"{score['bits_per_byte']:.5f}"
    )
    assert score["tokens"] == card["val"]["tokens"]


def _copy_shipped(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    shutil.copytree(course.SHIPPED_DIR, folder)
    monkeypatch.setattr(course, "SHIPPED_DIR", folder)
    return folder


@pytest.mark.parametrize("name", [course.SHIPPED_WEIGHTS, TOKENIZER_NAME])
def test_a_damaged_shipped_file_is_refused_with_a_way_forward(tmp_path, monkeypatch, name):
    folder = _copy_shipped(tmp_path, monkeypatch)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="retrain=True"):
        course.course_model(verbose=False)


def test_a_card_that_disagrees_with_the_weights_is_refused(tmp_path, monkeypatch):
    folder = _copy_shipped(tmp_path, monkeypatch)
    card = json.loads((folder / course.SHIPPED_CARD).read_text())
    card["model_config"]["n_layer"] += 1
    (folder / course.SHIPPED_CARD).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="card records"):
        course.load_shipped_model()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".course-model-abc.999999999.tmp"
    dead.mkdir()
    alive = tmp_path / f".course-model-abc.{os.getppid()}.tmp"
    alive.mkdir()
    kept = tmp_path / "course-model-abc"
    kept.mkdir()
    removed = course.clean_stale_temporaries(tmp_path)
    assert removed == [dead]
    assert alive.exists() and kept.exists() and not dead.exists()


@pytest.fixture()
def tiny_course(tmp_path, monkeypatch):
    """A tiny stand-in for the course: its own cache, nothing shipped, a 3-step recipe."""
    import random

    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(course, "SHIPPED_DIR", tmp_path / "nothing-shipped")
    texts = tmp_path / "texts"
    texts.mkdir()
    rng = random.Random(0)
    words = [f"{a}{b}" for a in ("ba", "co", "di", "fu", "ge", "hi") for b in "aeioustrn"]
    for i in range(6):  # distinct documents, so deduplication keeps them all
        lines = [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(60)]
        (texts / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
    data = {
        "corpus": str(texts),
        "vocab_size": 300,
        "pattern": "gpt4",
        "fractions": [0.6, 0.2, 0.2],
        "seed": 0,
    }
    monkeypatch.setattr("minillm.course.COURSE_DATA", data)
    tiny = {
        **course.COURSE_TRAIN,
        "max_steps": 3,
        "eval_interval": 3,
        "eval_batches": 1,
        "batch_size": 2,
        "peak_gflops": 10.0,
        "model_overrides": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
    }
    monkeypatch.setattr(course, "COURSE_TRAIN", tiny)
    return tmp_path / "cache"


def test_damaged_cached_data_is_rebuilt_and_says_so(tiny_course, capsys):
    folder = course.course_data(verbose=False)
    (folder / "val.bin").write_bytes((folder / "val.bin").read_bytes()[:-2])  # truncated
    again = course.course_data(verbose=False)
    assert "unusable" in capsys.readouterr().out
    assert again == folder and course._data_problem(folder) is None


def test_a_corrupt_cached_model_is_trained_again_and_says_so(tiny_course, capsys):
    model, _ = course.course_model(verbose=False)
    checkpoint = course.course_model_dir() / CHECKPOINT_NAME
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated
    again, _ = course.course_model(verbose=False)
    assert "training it again" in capsys.readouterr().out
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor)  # deterministic retrain


def test_the_course_command_heals_and_scores(tiny_course, capsys):
    from minillm import cli

    folder = course.course_data(verbose=False)
    (folder / "train.bin").unlink()  # a deleted cached file
    stale = folder.parent / ".course-model-x.999999999.tmp"
    stale.mkdir()
    assert cli.main(["course"]) == 0
    out = capsys.readouterr().out
    assert "unusable" in out and "removed the leftover" in out and "bits per byte" in out
    assert not stale.exists() and course._data_problem(folder) is None
