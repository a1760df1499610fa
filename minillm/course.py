"""The course's running example: the prepared Shakespeare data and the trained course model.

Taught in lesson 05 (pretraining); every later lesson starts from :func:`course_model`.
:func:`course_data` prepares the data once into the cache folder (``~/.cache/minillm`` or
``$MINILLM_CACHE``); :func:`course_model` trains the course model once and caches it.
``course_model("chat")`` is the course's chat model (lesson 08's SFT of the base model with the
chat template, :data:`CHAT_TRAIN`), which lessons 11, 12 and 13 serve, export and interpret.
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
from minillm.finetune.instructions import build_instructions
from minillm.finetune.objectives import train_steps
from minillm.finetune.sft import (
    CHAT_TEMPLATE_FILE,
    ChatFormat,
    add_chat_tokens,
    collate,
    load_chat_template,
    masked_cross_entropy,
    resize_token_embeddings,
    save_chat_template,
)
from minillm.model.config import PRESETS
from minillm.tokenizer.bpe import BPETokenizer
from minillm.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    TOKENIZER_NAME,
    CheckpointError,
    check_tokenizer,
    load_checkpoint,
    save_checkpoint,
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
CHAT_DIR = asset_path("chat_model")
"""The course chat model that ships inside the package (weights, tokenizer, template, card)."""
MODEL_NAMES: tuple[str, ...] = ("base", "chat")

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


def course_model(name: str = "base", *, retrain: bool = False, verbose: bool = True):
    """The course's pretrained GPT and its BPE tokenizer (``name="chat"``: the chat model).

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

    ``course_model("chat")`` is the chat model (:func:`chat_model`): the shipped base model after
    supervised fine-tuning with lesson 08's chat template; its tokenizer has the chat tokens.

    Args:
        name: "base" (the pretrained model, the default) or "chat".
        retrain: train the course model from scratch instead of loading the shipped one.
        verbose: print progress (the data preparation and the training bar).

    Returns:
        ``(model, tokenizer)``: a :class:`minillm.model.GPT` in eval mode on the CPU, and a
        :class:`minillm.tokenizer.BPETokenizer`.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    if name == "chat":
        return chat_model(retrain=retrain, verbose=verbose)
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


# The course chat model's recipe: supervised fine-tuning of the shipped base model on lesson 08's
# instruction tasks, in the chat template. `python scripts/ship_chat_model.py` trains and scores it
# and writes minillm/assets/chat_model/; course_model("chat", retrain=True) trains it into the cache.
CHAT_TRAIN: dict[str, Any] = {
    "base": "course_model() (the shipped base model)",
    "method": "sft",  # every parameter, loss on the answer and its <|end|> only
    # speaker and genre: one-word labels; continue: a generated line of verse (several words)
    "tasks": ["speaker", "genre", "continue"],
    "per_play": 200,  # examples of each task per training play
    "max_chars": 120,
    "steps": 120,  # about 6-8 minutes on 2 shared cores at a load of 10 (under a minute idle)
    "batch_size": 16,
    "learning_rate": 1e-3,
    "warmup": 20,
    "weight_decay": 0.0,
    "seed": 0,
}
"""The chat model's run (``scripts/ship_chat_model.py`` records it in the card)."""


def chat_model_dir() -> Path:
    """Where :func:`chat_model` keeps a chat model it trained."""
    base = shipped_card()
    key = _fingerprint(CHAT_TRAIN, base and base.get("weights_sha256"), FORMAT_VERSION)
    return cache_dir() / f"chat-model-{key}"


def train_chat_model(
    out_dir: str | Path,
    *,
    eval_plays: Any = None,
    docs: Any = None,
    verbose: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Fine-tune the shipped base model with :data:`CHAT_TRAIN` (any setting replaced) into ``out_dir``.

    Writes ``model.safetensors``, ``tokenizer.bpe`` (with the chat tokens) and
    ``chat_template.jinja``. ``eval_plays`` are held out of training (default: the evaluation
    plays of :mod:`minillm.finetune.instructions`; pass ``validation_plays()``, with ``docs``
    lacking the evaluation plays, to choose settings without them). Returns the recipe used,
    the seconds and the losses.
    """
    recipe = {**CHAT_TRAIN, **overrides}
    unknown = sorted(set(recipe) - set(CHAT_TRAIN))
    if unknown:
        raise ValueError(f"unknown chat recipe setting(s) {unknown}; known: {sorted(CHAT_TRAIN)}")
    base, tokenizer = course_model(verbose=verbose)
    tokenizer = add_chat_tokens(tokenizer)
    chat = ChatFormat(tokenizer)
    model = resize_token_embeddings(base, tokenizer.vocab_size)
    kwargs = {"eval_plays": eval_plays} if eval_plays is not None else {}
    data = build_instructions(
        recipe["per_play"],
        tasks=recipe["tasks"],
        max_chars=recipe["max_chars"],
        seed=recipe["seed"],
        docs=docs,
        **kwargs,
    )["train"]
    encoded = [chat.example(e.prompt, e.answer) for e in data]
    ids, targets, _ = collate(encoded, chat.end_id, model.config.block_size)
    torch.manual_seed(recipe["seed"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    batch, steps = recipe["batch_size"], recipe["steps"]

    def loss_fn(step: int) -> torch.Tensor:
        rows = torch.randint(0, ids.shape[0], (batch,), generator=gen)
        # drop the columns that are padding in every row of this batch (shorter sequences)
        width = int((targets[rows] != -100).nonzero()[:, 1].max()) + 2
        logits, _ = model(ids[rows, :width])
        loss = masked_cross_entropy(logits, targets[rows, :width])
        if verbose and (step + 1) % max(1, steps // 10) == 0:
            print(f"chat SFT step {step + 1}/{steps}: loss {loss.item():.4f}", flush=True)
        return loss

    log = train_steps(
        model,
        loss_fn,
        steps,
        lr=recipe["learning_rate"],
        weight_decay=recipe["weight_decay"],
        warmup=recipe["warmup"],
    )
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out / SHIPPED_WEIGHTS,
        model,
        step=steps,
        train_config={"chat": recipe},
        rng_states=[],
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    tokenizer.save(out / TOKENIZER_NAME)
    save_chat_template(out)
    return {"recipe": recipe, "seconds": log.seconds, "losses": log.losses, "examples": len(data)}


def _load_chat_folder(folder: Path):
    if load_chat_template(folder) is None:
        raise CheckpointError(f"{folder} has no {CHAT_TEMPLATE_FILE}: not a chat model folder")
    checkpoint = load_checkpoint(folder / SHIPPED_WEIGHTS)
    tokenizer = BPETokenizer.load(folder / TOKENIZER_NAME)
    check_tokenizer(checkpoint, tokenizer, folder / TOKENIZER_NAME)
    ChatFormat(tokenizer)  # checks the chat tokens
    return checkpoint.build_model(), tokenizer


def chat_card() -> dict[str, Any] | None:
    """The card of the shipped chat model (recipe, scores, fingerprints), or None if absent."""
    card = CHAT_DIR / SHIPPED_CARD
    return json.loads(card.read_text()) if card.is_file() else None


def load_shipped_chat_model():
    """The chat model that ships inside the package, checked against its card.

    Raises:
        FileNotFoundError: this installation has no shipped chat model.
        CheckpointError: a file does not match the SHA-256 its card records.
    """
    card = chat_card()
    if card is None:
        raise FileNotFoundError(f"no shipped chat model in {CHAT_DIR}")
    for name, digest in card["sha256"].items():
        if file_sha256(CHAT_DIR / name) != digest:
            raise CheckpointError(
                f"the shipped {name} in {CHAT_DIR} does not match its recorded SHA-256: the "
                "installation is damaged. Reinstall minillm, or train the chat model yourself "
                'with minillm.course_model("chat", retrain=True)'
            )
    return _load_chat_folder(CHAT_DIR)


def chat_model(*, retrain: bool = False, verbose: bool = True):
    """The course chat model and its tokenizer (with the chat tokens): ``course_model("chat")``.

    By default the one shipped in ``minillm/assets/chat_model/`` (its card records the recipe
    :data:`CHAT_TRAIN`, the held-out scores and the fingerprints). ``retrain=True`` fine-tunes
    the shipped base model again with the same recipe into the cache folder (a few minutes on
    2 CPU cores) and returns that; an installation without the shipped files trains once and
    then loads from the cache.
    """
    if not retrain and chat_card() is not None:
        return load_shipped_chat_model()
    final = chat_model_dir()
    clean_stale_temporaries(final.parent)
    if not retrain and (final / SHIPPED_WEIGHTS).is_file():
        try:
            return _load_chat_folder(final)
        except (OSError, ValueError) as err:  # CheckpointError is a ValueError
            print(f"the cached chat model {final.name} is unusable ({err}); training it again")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    result = train_chat_model(tmp, verbose=verbose)
    (tmp / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    _publish(tmp, final)
    return _load_chat_folder(final)


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
