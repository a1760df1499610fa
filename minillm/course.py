"""The course's running example: the prepared Shakespeare data and the trained course model.

Taught in lesson 05 (pretraining); every later lesson starts from :func:`course_model`.
:func:`course_data` prepares the data once into the cache folder (``~/.cache/minillm`` or
``$MINILLM_CACHE``); :func:`course_model` trains the course model once and caches it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minillm.data.splits import load_split
from minillm.model.config import PRESETS
from minillm.tokenizer.bpe import BPETokenizer
from minillm.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    TOKENIZER_NAME,
    CheckpointError,
    check_tokenizer,
    load_checkpoint,
)
from minillm.train.config import TrainConfig
from minillm.train.loop import train
from minillm.train.shards import COURSE_DATA, file_sha256, prepare, verify_data_dir
from minillm.utils.assets import asset_path
from minillm.utils.outputs import clean_stale_temporaries as _clean_stale

CACHE_ENV_VAR = "MINILLM_CACHE"
"""Environment variable naming the cache folder for trained course artefacts."""

SHIPPED_DIR = asset_path("course_model")
"""The trained course model that ships inside the package (weights, tokenizer, card)."""
SHIPPED_WEIGHTS = "model.safetensors"
SHIPPED_CARD = "card.json"

# The shipped course model's recipe: the best point of the sweep in bench/course_recipe.py for
# about 15 minutes of training on 2 CPU cores. `python scripts/ship_course_model.py` trains it and
# writes minillm/assets/course_model/; course_model(retrain=True) trains it into the cache.
COURSE_TRAIN: dict[str, Any] = {
    "model_preset": "course",  # 4 layers x 128 wide, 4,096-token vocabulary, 128-token context
    # Rotary positions instead of learned ones: 2.110 against 2.152 bits per byte at 10,500
    # steps (bench/results/course_recipe.json); exported as GPT-NeoX (minillm.release.hub).
    "model_overrides": {"pos_emb": "rope"},
    "max_steps": 14000,  # x 4 sequences x 128 tokens = 7.2M tokens, about 4.9 epochs
    "batch_size": 4,  # many small steps learn more per CPU-second than few large ones
    "learning_rate": 3e-3,
    "warmup_steps": 300,
    "eval_interval": 500,
    "eval_batches": 16,
    "log_interval": 50,
    "checkpoint_interval": 1000,
    "seed": 1337,
}
"""The course model's run (``configs/course.toml`` holds the same settings for ``minillm train``)."""

# Lesson 05's run: the same recipe, shortened to fit the lesson (under two minutes of training on
# 2 cores).
# At this budget a smaller model learns more (bench/results/course_recipe.json: 3 x 96 beat
# 4 x 128 by 0.11 bits per byte at two minutes, and by 0.03 at five), and RoPE positions beat
# learned ones by 0.09 with a fifth of the seed-to-seed spread (bench/results/ablation.json).
LESSON_TRAIN: dict[str, Any] = {
    **COURSE_TRAIN,
    "model_overrides": {"n_layer": 3, "n_embd": 96, "n_head": 4, "pos_emb": "rope"},
    "max_steps": 2300,
    "warmup_steps": 100,
    "eval_interval": 400,
    "eval_batches": 8,
    "checkpoint_interval": 0,
}
"""The shortened course run that lesson 05 trains in front of the learner."""


def course_config(**overrides: Any) -> TrainConfig:
    """The course model's :class:`TrainConfig` (:data:`COURSE_TRAIN`), with any setting replaced."""
    return TrainConfig.from_dict({**COURSE_TRAIN, **overrides})


def lesson_config(**overrides: Any) -> TrainConfig:
    """Lesson 05's shortened run (:data:`LESSON_TRAIN`), with any setting replaced."""
    return TrainConfig.from_dict({**LESSON_TRAIN, **overrides})


def cache_dir() -> Path:
    """The cache folder for trained course artefacts: ``$MINILLM_CACHE`` or ``~/.cache/minillm``."""
    configured = os.environ.get(CACHE_ENV_VAR, "").strip()
    folder = Path(configured).expanduser() if configured else Path.home() / ".cache" / "minillm"
    if folder.exists() and not folder.is_dir():
        source = f"${CACHE_ENV_VAR} ({folder})" if configured else str(folder)
        raise NotADirectoryError(
            f"the cache folder {source} is a file; point ${CACHE_ENV_VAR} at a folder (it is "
            "created if missing), or move the file away"
        )
    return folder


def _fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished folder into place atomically; if another process won the race, keep theirs."""
    if final.exists():
        shutil.rmtree(final)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def clean_stale_temporaries(folder: Path | None = None) -> list[Path]:
    """Remove ``.<name>.<pid>.tmp`` leftovers of killed runs from the cache (or ``folder``).

    The cache's use of :func:`minillm.utils.outputs.clean_stale_temporaries`.
    """
    return _clean_stale(cache_dir() if folder is None else folder)


def _data_problem(folder: Path) -> str | None:
    """Why a cached data folder cannot be used (None when it is complete and intact)."""

    try:
        verify_data_dir(folder, deep=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return str(err)
    return None


def course_data(*, rebuild: bool = False, verbose: bool = True) -> Path:
    """The course dataset folder (shards + tokenizer), prepared once and cached.

    Runs :func:`minillm.train.shards.prepare` with :data:`minillm.train.shards.COURSE_DATA` the first time
    (about 10 s) into the cache folder; later calls check the folder and return it at once. A
    damaged cached folder (truncated or missing files) is rebuilt, with a message saying so.
    """

    final = cache_dir() / f"course-data-{_fingerprint(COURSE_DATA, FORMAT_VERSION)}"
    clean_stale_temporaries(final.parent)
    if final.exists() and not rebuild:
        problem = _data_problem(final)
        if problem is None:
            return final
        print(f"the cached course data {final.name} is unusable: {problem}; rebuilding it")
    final.parent.mkdir(parents=True, exist_ok=True)
    # prepare() builds in a temporary sibling and renames it into place: complete or absent
    prepare(final, verbose=verbose, overwrite=True, **COURSE_DATA)
    return final


def course_model_dir() -> Path:
    """Where :func:`course_model` keeps a run it trained (checkpoint, log, tokenizer)."""

    key = _fingerprint(COURSE_DATA, COURSE_TRAIN, PRESETS["course"], FORMAT_VERSION)
    return cache_dir() / f"course-model-{key}"


def train_course_model(out_dir: str | Path, *, verbose: bool = True, **overrides: Any):
    """Train the course model (:data:`COURSE_TRAIN`, any setting replaced) into ``out_dir``.

    Returns the :class:`minillm.train.TrainResult`; ``out_dir`` gets the checkpoint, the log,
    the tokenizer and ``train_config.json``.
    """
    data_dir = course_data(verbose=verbose)
    settings = {"data_dir": str(data_dir), "device": "cpu", "progress": verbose, **overrides}
    config = course_config(out_dir=str(out_dir), **settings)
    result = train(config)
    Path(out_dir, "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return result


def shipped_card() -> dict[str, Any] | None:
    """The card of the shipped course model (config, scores, fingerprints), or None if absent."""
    card = SHIPPED_DIR / SHIPPED_CARD
    return json.loads(card.read_text()) if card.is_file() else None


def load_shipped_model():
    """The course model that ships inside the package, checked against its card.

    Raises:
        FileNotFoundError: this installation has no shipped model.
        CheckpointError: a file does not match the SHA-256 its card records, or the weights do
            not match the recorded configuration (a damaged installation: reinstall minillm, or
            train the model with ``course_model(retrain=True)``).
    """

    card = shipped_card()
    if card is None:
        raise FileNotFoundError(f"no shipped course model in {SHIPPED_DIR}")
    for name, key in ((SHIPPED_WEIGHTS, "weights_sha256"), (TOKENIZER_NAME, "tokenizer_sha256")):
        if not (SHIPPED_DIR / name).is_file():
            raise FileNotFoundError(
                f"the shipped {name} is missing from {SHIPPED_DIR}: the installation is "
                "damaged. Reinstall minillm, or train the model yourself with "
                "minillm.course_model(retrain=True)"
            )
        if file_sha256(SHIPPED_DIR / name) != card[key]:
            raise CheckpointError(
                f"the shipped {name} in {SHIPPED_DIR} does not match its recorded SHA-256: the "
                "installation is damaged. Reinstall minillm, or train the model yourself with "
                "minillm.course_model(retrain=True)"
            )
    checkpoint = load_checkpoint(SHIPPED_DIR / SHIPPED_WEIGHTS)
    if checkpoint.model_config != card["model_config"]:
        raise CheckpointError(
            f"the shipped weights were saved with {checkpoint.model_config}, but the card "
            f"records {card['model_config']}"
        )
    tokenizer = BPETokenizer.load(SHIPPED_DIR / TOKENIZER_NAME)
    check_tokenizer(checkpoint, tokenizer, SHIPPED_DIR / TOKENIZER_NAME)
    return checkpoint.build_model(), tokenizer


def _load_trained(final: Path):
    checkpoint = load_checkpoint(final / CHECKPOINT_NAME)
    tokenizer = BPETokenizer.load(final / TOKENIZER_NAME)
    check_tokenizer(checkpoint, tokenizer, final / TOKENIZER_NAME)
    return checkpoint.build_model(), tokenizer


def course_model(*, retrain: bool = False, verbose: bool = True):
    """The course's pretrained GPT and its BPE tokenizer.

    By default this is the model that ships inside the package (trained by
    ``scripts/ship_course_model.py`` with :data:`COURSE_TRAIN`; its card in
    ``minillm/assets/course_model/card.json`` records its scores): it loads in about a second on
    any machine. ``retrain=True`` trains the same recipe from scratch on this machine (about 15
    minutes on 2 CPU cores) into the cache folder (``~/.cache/minillm`` or ``$MINILLM_CACHE``)
    and returns that model; later calls without ``retrain`` return it too (so ``minillm course
    --retrain`` makes ``sample``, ``serve`` and the lessons use the retrained model; delete
    :func:`course_model_dir` to go back to the shipped one). An installation without the
    shipped files trains once and then loads from the cache. A cached run that is damaged is
    trained again (or, when a shipped model exists, set aside for it), with a message saying so.

    Args:
        retrain: train the course model from scratch instead of loading the shipped one.
        verbose: print progress (the data preparation and the training bar).

    Returns:
        ``(model, tokenizer)``: a :class:`minillm.model.GPT` in eval mode on the CPU, and a
        :class:`minillm.tokenizer.BPETokenizer`.
    """
    final = course_model_dir()
    if not retrain and (final / CHECKPOINT_NAME).is_file():  # retrained here: it wins
        try:
            return _load_trained(final)
        except (OSError, ValueError) as err:  # CheckpointError is a ValueError
            again = "using the shipped one" if shipped_card() else "training it again"
            print(f"the cached course model {final.name} is unusable ({err}); {again}")
    if not retrain and shipped_card() is not None:
        return load_shipped_model()
    clean_stale_temporaries(final.parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    train_course_model(tmp, verbose=verbose)
    _publish(tmp, final)
    return _load_trained(final)


@torch.no_grad()
def split_bits_per_byte(model: nn.Module, data_dir: str | Path, split: str = "val") -> dict:
    """Bits per byte of ``model`` on a whole prepared split, the course's headline number.

    The split's token stream is cut into consecutive windows of the model's ``block_size``; every
    token after the first of a window is predicted from the tokens before it in that window (the
    first token of the stream is not scored). The total cross-entropy in bits is divided by the
    split's UTF-8 byte count from ``meta.json``, so models with different tokenizers compare
    fairly. Returns ``{"nats_per_token", "bits_per_byte", "tokens", "bytes"}``.
    """
    data_dir = Path(data_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    n_bytes = int(meta["splits"][split]["bytes"])
    tokens = torch.from_numpy(np.asarray(load_split(data_dir, split), dtype=np.int64))
    block = model.config.block_size
    was_training = model.training
    model.eval()
    total, counted = 0.0, 0
    # windows overlap by one token so that every token but the very first is scored once
    starts = list(range(0, len(tokens) - 1, block))
    for i in range(0, len(starts), 16):
        rows = [tokens[s : s + block + 1] for s in starts[i : i + 16]]
        for row in rows:  # ragged last window: score it alone
            if len(row) < block + 1:
                logits, _ = model(row[None, :-1])
                nll = F.cross_entropy(logits[0], row[1:], reduction="sum")
                total, counted = total + nll.item(), counted + len(row) - 1
        full = [row for row in rows if len(row) == block + 1]
        if full:
            batch = torch.stack(full)
            logits, _ = model(batch[:, :-1])
            nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            total, counted = total + nll.item(), counted + batch[:, 1:].numel()
    model.train(was_training)
    return {
        "nats_per_token": total / counted,
        "bits_per_byte": total / math.log(2) / n_bytes,
        "tokens": counted,
        "bytes": n_bytes,
    }
