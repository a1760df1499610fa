"""The course's running example: the prepared Shakespeare data and the trained course model.

Taught in lesson 05 (pretraining); every later lesson starts from :func:`course_model`.
:func:`course_data` prepares the data once into the cache folder (``~/.cache/minillm`` or
``$MINILLM_CACHE``); :func:`course_model` trains the course model once and caches it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from minillm.checkpoint import CHECKPOINT_NAME, FORMAT_VERSION, TOKENIZER_NAME, load_checkpoint
from minillm.train import TrainConfig, train

CACHE_ENV_VAR = "MINILLM_CACHE"
"""Environment variable naming the cache folder for trained course artefacts."""

COURSE_TRAIN: dict[str, Any] = {
    "model_preset": "course",
    "max_steps": 1200,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "warmup_steps": 30,
    "eval_interval": 200,
    "eval_batches": 8,
    "log_interval": 20,
    "checkpoint_interval": 200,
    "seed": 1337,
}
"""The course default run (``configs/course.toml`` holds the same settings for ``minillm train``)."""


def course_config(**overrides: Any) -> TrainConfig:
    """The course default :class:`TrainConfig`, with any setting replaced."""
    return TrainConfig.from_dict({**COURSE_TRAIN, **overrides})


def cache_dir() -> Path:
    """The cache folder for trained course artefacts: ``$MINILLM_CACHE`` or ``~/.cache/minillm``."""
    configured = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "minillm"


def _fingerprint(*parts: Any) -> str:
    import hashlib

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


def course_data(*, rebuild: bool = False, verbose: bool = True) -> Path:
    """The course dataset folder (shards + tokenizer), prepared once and cached.

    Runs :func:`minillm.prepare.prepare` with :data:`minillm.prepare.COURSE_DATA` the first time
    (about 20 s) into the cache folder; later calls return the folder at once.
    """
    from minillm.prepare import COURSE_DATA, META_FILE, prepare

    final = cache_dir() / f"course-data-{_fingerprint(COURSE_DATA, FORMAT_VERSION)}"
    if (final / META_FILE).is_file() and not rebuild:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    prepare(tmp, verbose=verbose, **{k: v for k, v in COURSE_DATA.items()})
    return _publish(tmp, final)


def course_model_dir() -> Path:
    """Where :func:`course_model` keeps its run (checkpoint, log, tokenizer)."""
    from minillm.model import PRESETS
    from minillm.prepare import COURSE_DATA

    key = _fingerprint(COURSE_DATA, COURSE_TRAIN, PRESETS["course"], FORMAT_VERSION)
    return cache_dir() / f"course-model-{key}"


def course_model(*, retrain: bool = False, verbose: bool = True):
    """The course's pretrained GPT and its BPE tokenizer, trained on first use and then cached.

    The first call prepares the data (:func:`course_data`) and trains the course default
    (:data:`COURSE_TRAIN`, about a minute or two on a 2-core CPU), deterministically; the
    finished run is moved into :func:`course_model_dir` in one rename, so an interrupted call
    leaves nothing half-written. Later calls load it in about a second. The cache folder is
    ``~/.cache/minillm`` or ``$MINILLM_CACHE``; a change to the course settings retrains.

    Args:
        retrain: train again even if a cached model exists.
        verbose: print progress (the data preparation and the training bar).

    Returns:
        ``(model, tokenizer)``: a :class:`minillm.model.GPT` in eval mode on the CPU, and a
        :class:`minillm.tokenizer.BPETokenizer`.
    """
    from minillm.tokenizer import BPETokenizer

    final = course_model_dir()
    if retrain or not (final / CHECKPOINT_NAME).is_file():
        data_dir = course_data(verbose=verbose)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        config = course_config(
            data_dir=str(data_dir), out_dir=str(tmp), device="cpu", progress=verbose
        )
        train(config)
        (tmp / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        _publish(tmp, final)
    model = load_checkpoint(final / CHECKPOINT_NAME).build_model()
    return model, BPETokenizer.load(final / TOKENIZER_NAME)
