"""``minillm finetune``: the lesson-08 methods as resumable runs from the command line.

Taught in lesson 08 (fine-tuning). One run adapts a base model (the course model, or
``--checkpoint``) with one method on the instruction set of :mod:`minillm.finetune.instructions`
(split by play) and scores it on the held-out plays:

- ``full``: every parameter, plain format (``{question}\\nAnswer: {answer}\\n``, loss on the
  answer only; the vocabulary is unchanged, the answer ends at the newline);
- ``lora``: the same data and format, only LoRA adapters trained (:mod:`minillm.finetune.lora`);
- ``sft``: every parameter, the chat template with its special tokens (:mod:`minillm.finetune.sft`);
- ``dpo``: preference tuning of an SFT model (``--checkpoint`` of a ``--method sft`` run), the
  SFT model itself as the frozen reference (:mod:`minillm.finetune.dpo`);
- ``grpo``: reinforcement learning from a verifiable reward (lesson 14): ten-syllable next
  lines, :mod:`minillm.cli.finetune_grpo`; ``--batch-size`` prompts per step, each with a group
  of ``--group-size`` sampled completions, the base model as the KL reference (``--beta``);
- ``classify``: a linear head (and, by default, the last two blocks) for comedy / tragedy /
  history, on its own passages: ``--classify-chars`` long (default 400, near the model's
  128-token context; the generation tasks' ``--max-chars`` passages are too short to tell genre
  from), ``--classify-per-play`` of them per play.

The guarantees are those of ``minillm train``: the checkpoint (``OUT/checkpoint.safetensors``:
weights, optimizer, step, random state, settings) is written atomically every ``--save-every``
steps and at the end; an existing one is never overwritten without ``--overwrite``;
``--resume`` continues exactly where it stopped (the resumed run's weights equal an uninterrupted
run's) and refuses settings that differ from the saved ones. Results go to ``OUT/finetune.json``;
a LoRA run also writes its adapter in peft's layout to ``OUT/adapter``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm.cli.evaluate import load_for_eval
from minillm.cli.finetune_grpo import grpo_parts
from minillm.course import course_model
from minillm.data.pipeline import prepare_corpus, split_documents
from minillm.evaluate.metrics import bits_per_byte
from minillm.evaluate.stats import bootstrap_ci
from minillm.finetune import objectives as ft
from minillm.finetune import sft
from minillm.finetune.instructions import (
    EVAL_PLAYS,
    build_instructions,
    preference_pairs,
    validation_plays,
)
from minillm.finetune.lora_files import save_adapter
from minillm.finetune.sft import CHAT_TOKENS, Encoded, collate
from minillm.train.checkpoint import (
    CHECKPOINT_NAME,
    TOKENIZER_NAME,
    CheckpointError,
    load_checkpoint,
    load_model_state,
    restore_rng,
    rng_snapshot,
    save_checkpoint,
)
from minillm.train.loop import NonFiniteLossError
from minillm.train.schedule import configure_optimizer
from minillm.utils.outputs import RunLock

__all__ = ["METHODS", "FinetuneSettings", "run_finetune", "RESULTS_NAME"]

METHODS: tuple[str, ...] = ("full", "lora", "sft", "dpo", "classify", "grpo")
RESULTS_NAME = "finetune.json"
GENRE_NAMES: tuple[str, ...] = ("comedy", "history", "tragedy")
_SCORING_ONLY = ("n_resamples", "forgetting_chars")  # may change on resume: training is the same
DEFAULT_LR = {"full": 1e-3, "lora": 5e-3, "sft": 1e-3, "dpo": 1e-4, "classify": 3e-3, "grpo": 3e-4}


@dataclass
class FinetuneSettings:
    """Everything that decides a fine-tuning run (saved in its checkpoint, checked on resume)."""

    method: str = "lora"
    steps: int = 150
    lr: float | None = None  # None: the method's default (see DEFAULT_LR)
    batch_size: int = 16
    warmup: int = 10
    per_play: int = 24
    tasks: list[str] = field(default_factory=lambda: ["speaker", "genre"])
    max_chars: int = 120
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["c_attn", "c_fc"])
    beta: float = 0.1  # dpo: the preference strength; grpo: the KL coefficient
    train_blocks: int = 2  # classify: the last blocks trained with the head (0: head only)
    classify_chars: int = 400
    classify_per_play: int = 96
    group_size: int = 8  # grpo: completions per prompt
    clip_epsilon: float = 0.2  # grpo: the ratio's clip range
    max_new_tokens: int = 24  # grpo: the longest completion
    temperature: float = 1.0  # grpo: sampling temperature
    seed: int = 0
    n_resamples: int = 1000
    forgetting_chars: int = 0
    # hold out instructions.validation_plays() (training plays) instead of the evaluation plays,
    # which are then not read at all: for choosing settings without looking at the test plays
    validation: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        positive = ("steps", "batch_size", "per_play", "max_chars", "rank", "n_resamples")
        positive += ("max_new_tokens",)
        for name in (*positive, "classify_chars", "classify_per_play"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("warmup", "seed", "forgetting_chars", "train_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size < 2
        ):
            raise ValueError(f"group_size must be an int >= 2, got {self.group_size!r}")
        if not isinstance(self.validation, bool):
            raise ValueError(f"validation must be True or False, got {self.validation!r}")
        for name in ("alpha", "beta", "clip_epsilon", "temperature") + (
            ("lr",) if self.lr is not None else ()
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the method's default."""
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.method])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Job:
    """A method made concrete: what to train, one batch's loss, and how to score the result."""

    model: nn.Module
    tokenizer: Any  # the tokenizer of the fine-tuned model (with chat tokens for sft/dpo)
    loss: Callable[[torch.Generator], torch.Tensor]
    score: Callable[[], dict[str, Any]]
    lm: nn.Module | None = None  # the language model to score forgetting on (None: classify)


def _ci(values: Sequence[float], settings: FinetuneSettings) -> dict[str, float]:
    est = bootstrap_ci(list(values), n_resamples=settings.n_resamples, seed=settings.seed)
    return {"mean": est.mean, "low": est.low, "high": est.high, "n": est.n}


def _exact_match_report(model, ids, targets, examples, settings) -> dict[str, Any]:
    hits = ft.answer_exact_match(model, ids, targets).tolist()
    report = {"exact_match": _ci(hits, settings), "by_task": {}}
    for task in settings.tasks:
        picked = [h for h, e in zip(hits, examples, strict=True) if e.task == task]
        if picked:
            report["by_task"][task] = _ci(picked, settings)
    return report


def plain_example(tokenizer, prompt: str, answer: str):
    """``{prompt}\\nAnswer: {answer}\\n`` with the loss mask on the answer and its newline."""

    head = tokenizer.encode_ordinary(f"{prompt}\nAnswer:")
    tail = tokenizer.encode_ordinary(f" {answer}\n")
    return Encoded(head + tail, [0] * len(head) + [1] * len(tail))


def _sampler(ids: torch.Tensor, targets: torch.Tensor, model, batch_size: int):
    def loss(gen: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, ids.shape[0], (batch_size,), generator=gen)
        return ft.sft_loss(model, ids[rows], targets[rows])

    return loss


def _supervised_job(settings, base, tokenizer, data) -> _Job:
    train, held = data["train"], data["eval"]
    if settings.method in ("full", "lora"):
        chat_tokenizer = tokenizer
        model = copy.deepcopy(base)

        def encode(e):
            return plain_example(tokenizer, e.prompt, e.answer)

        pad = 0
    else:  # sft: the chat template, special tokens added
        chat_tokenizer = sft.add_chat_tokens(tokenizer)
        chat = sft.ChatFormat(chat_tokenizer)
        model = sft.resize_token_embeddings(base, chat_tokenizer.vocab_size)

        def encode(e):
            return chat.example(e.prompt, e.answer)

        pad = chat.end_id
    limit = model.config.block_size
    train_ids, train_targets, _ = sft.collate([encode(e) for e in train], pad, limit)
    eval_ids, eval_targets, _ = sft.collate([encode(e) for e in held], pad, limit)
    if settings.method == "lora":
        ft.apply_lora(model, targets=settings.targets, r=settings.rank, alpha=settings.alpha)
    for p in model.parameters():
        p.requires_grad_(p.requires_grad or settings.method != "lora")

    def score() -> dict[str, Any]:
        return _exact_match_report(model, eval_ids, eval_targets, held, settings)

    loss = _sampler(train_ids, train_targets, model, settings.batch_size)
    return _Job(model, chat_tokenizer, loss, score, model)


def _dpo_job(settings, base, tokenizer, data) -> _Job:
    chat = sft.ChatFormat(tokenizer)
    reference = base.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = copy.deepcopy(base)
    for p in policy.parameters():
        p.requires_grad_(True)
    limit = base.config.block_size
    train_pairs = preference_pairs(data["train"], seed=settings.seed)
    eval_pairs = preference_pairs(data["eval"], seed=settings.seed)
    pair_ids, pair_targets = ft.preference_batch(chat, train_pairs, chat.end_id, limit)
    eval_pair_ids, eval_pair_targets = ft.preference_batch(chat, eval_pairs, chat.end_id, limit)
    n_train, n_eval, b = len(train_pairs), len(eval_pairs), settings.batch_size

    def loss(gen: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, n_train, (b,), generator=gen)
        both = torch.cat([rows, rows + n_train])  # chosen rows, then their rejected rows
        with torch.no_grad():
            ref = ft.sequence_logprobs(reference(pair_ids[both])[0], pair_targets[both])
        lp = ft.sequence_logprobs(policy(pair_ids[both])[0], pair_targets[both])
        return ft.dpo_loss(lp[:b], lp[b:], ref[:b], ref[b:], settings.beta).loss

    @torch.no_grad()
    def margins(model) -> torch.Tensor:
        was = model.training
        model.eval()
        lp = torch.cat(
            [
                ft.sequence_logprobs(
                    model(eval_pair_ids[i : i + 64])[0], eval_pair_targets[i : i + 64]
                )
                for i in range(0, eval_pair_ids.shape[0], 64)
            ]
        )
        model.train(was)
        return lp[:n_eval] - lp[n_eval:]

    eval_ids, eval_targets, _ = sft.collate(
        [chat.example(e.prompt, e.answer) for e in data["eval"]], chat.end_id, limit
    )

    def score() -> dict[str, Any]:
        report = _exact_match_report(policy, eval_ids, eval_targets, data["eval"], settings)
        before, after = margins(reference), margins(policy)
        report["margin_before"] = _ci(before.tolist(), settings)
        report["margin_after"] = _ci(after.tolist(), settings)
        report["preferred_first_before"] = float((before > 0).float().mean())
        report["preferred_first_after"] = float((after > 0).float().mean())
        return report

    return _Job(policy, tokenizer, loss, score, policy)


def genre_passages(examples) -> tuple[list[str], torch.Tensor]:
    """The passages of the ``genre`` examples (without the question) and their label ids."""
    rows = [e for e in examples if e.task == "genre"]
    texts = [e.prompt.split("\n", 1)[1] for e in rows]
    return texts, torch.tensor([GENRE_NAMES.index(e.answer) for e in rows], dtype=torch.long)


def pad_texts(tokenizer, texts: Sequence[str], side: str = "right", max_len: int | None = None):
    """``(ids, attention)`` of plain texts padded on ``side``."""

    encoded = [Encoded(ids, [0] * len(ids)) for ids in map(tokenizer.encode_ordinary, texts)]
    ids, _, attention = collate(encoded, 0, max_len, side=side)
    return ids, attention


def held_out_split(
    settings: FinetuneSettings, docs: Sequence | None = None
) -> tuple[Sequence | None, tuple[str, ...]]:
    """(documents to read, plays to hold out): the evaluation plays, or with ``validation`` the
    validation plays, the evaluation plays' documents then dropped so that nothing reads them."""

    if not settings.validation:
        return docs, EVAL_PLAYS
    if docs is None:
        docs = prepare_corpus()
    return [d for d in docs if d.title not in EVAL_PLAYS], validation_plays()


def classify_data(settings: FinetuneSettings, docs: Sequence | None = None) -> dict[str, list]:
    """The genre passages of ``--method classify`` (and of its baselines), split by play."""

    docs, held_out = held_out_split(settings, docs)
    return build_instructions(
        settings.classify_per_play,
        tasks=["genre"],
        eval_plays=held_out,
        max_chars=settings.classify_chars,
        seed=settings.seed,
        docs=docs,
    )


def _classify_job(settings, base, tokenizer, data) -> _Job:
    train_texts, train_labels = genre_passages(data["train"])
    eval_texts, eval_labels = genre_passages(data["eval"])
    model = ft.SequenceClassifier(copy.deepcopy(base), len(GENRE_NAMES))
    for p in model.body.parameters():
        p.requires_grad_(False)
    if settings.train_blocks:  # the last blocks (all of them in a shallower model) and ln_f
        for block in model.body.transformer.h[-settings.train_blocks :]:
            block.requires_grad_(True)
        model.body.transformer.ln_f.requires_grad_(True)
    limit = base.config.block_size
    ids, attention = pad_texts(tokenizer, train_texts, "right", limit)
    eval_ids, eval_attention = pad_texts(tokenizer, eval_texts, "right", limit)

    def loss(gen: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, len(train_labels), (settings.batch_size,), generator=gen)
        logits = model(ids[rows], attention[rows])
        return nn.functional.cross_entropy(logits, train_labels[rows])

    @torch.no_grad()
    def score() -> dict[str, Any]:
        model.eval()
        predicted = model(eval_ids, eval_attention).argmax(-1)
        counts = torch.bincount(train_labels, minlength=len(GENRE_NAMES))
        majority = int(counts.argmax())
        return {
            "accuracy": _ci((predicted == eval_labels).float().tolist(), settings),
            "majority_class": GENRE_NAMES[majority],
            "majority_accuracy": _ci((eval_labels == majority).float().tolist(), settings),
        }

    return _Job(model, tokenizer, loss, score, None)


def _make_job(settings, base, tokenizer, docs=None) -> _Job:
    if settings.method == "dpo" and not set(CHAT_TOKENS) <= set(tokenizer.special_tokens):
        raise ValueError(
            "--method dpo starts from an instruction-tuned model: pass --checkpoint OUT of a "
            "`minillm finetune --method sft` run (its tokenizer has the chat tokens)"
        )

    if settings.method == "grpo":
        docs, held_out = held_out_split(settings, docs)
        ci = lambda values: _ci(values, settings)  # noqa: E731
        model, loss, score = grpo_parts(settings, base, tokenizer, docs, held_out, ci)
        return _Job(model, tokenizer, loss, score, model)
    if settings.method == "classify":
        data = classify_data(settings, docs)
    else:
        docs, held_out = held_out_split(settings, docs)
        data = build_instructions(
            settings.per_play,
            tasks=settings.tasks,
            eval_plays=held_out,
            max_chars=settings.max_chars,
            seed=settings.seed,
            docs=docs,
        )
    if not data["train"] or not data["eval"]:
        raise ValueError("the instruction set is empty: the corpus has no known plays")
    builder = {"dpo": _dpo_job, "classify": _classify_job}.get(settings.method, _supervised_job)
    return builder(settings, base, tokenizer, data)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup, then a cosine to 10% of ``lr`` (as :func:`minillm.finetune.train_steps`)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def _load_base(checkpoint: str | None, tokenizer_path: str | None):
    if checkpoint is None:
        model, tokenizer = course_model(verbose=False)
        return model.eval(), tokenizer

    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    return load_for_eval(path, tokenizer_path)


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def _check_resumable(saved: dict[str, Any] | None, settings: FinetuneSettings, path: Path) -> None:
    if not saved or saved.get("finetune") is None:
        raise CheckpointError(f"{path} was not written by `minillm finetune`; cannot resume it")
    mine, theirs = settings.to_dict(), saved["finetune"]
    default = FinetuneSettings(method=settings.method).to_dict()  # a key older runs lack
    changed = sorted(
        k for k in mine if k not in _SCORING_ONLY and theirs.get(k, default[k]) != mine[k]
    )
    if changed:
        shown = ", ".join(f"{k}: {theirs.get(k, default[k])!r} -> {mine[k]!r}" for k in changed)
        raise ValueError(
            f"--resume with settings that differ from the checkpoint's ({shown}); resume with the "
            "same settings, or start again with --overwrite"
        )


def run_finetune(
    settings: FinetuneSettings,
    out_dir: str | Path,
    *,
    base: nn.Module | None = None,
    tokenizer: Any = None,
    checkpoint: str | None = None,
    tokenizer_path: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    save_every: int = 50,
    stop_after: int | None = None,
    docs: Sequence | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Fine-tune with ``settings.method``, checkpointing into ``out_dir``; returns the results.

    Args:
        base, tokenizer: the model to adapt (default: ``checkpoint``, else the course model).
        resume: continue from ``out_dir``'s checkpoint (same settings required).
        overwrite: start again even if ``out_dir`` holds a checkpoint.
        save_every: steps between checkpoints (one is always written at the end).
        stop_after: stop (after saving) once this many steps are done, as an interruption would.
        docs: corpus documents for :func:`minillm.finetune.instructions.build_instructions`.

    Returns:
        The content of ``out_dir/finetune.json`` (``complete`` False when stopped early).

    Raises:
        FileExistsError: a checkpoint exists and neither ``resume`` nor ``overwrite`` is set.
        ValueError: bad settings, or resuming with settings that differ from the saved ones.
    """
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ValueError(f"save_every must be a positive int, got {save_every!r}")
    if resume and overwrite:
        raise ValueError("choose --resume or --overwrite, not both")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    with RunLock(out):  # one writer per run folder; stale temporaries of dead ones removed
        ckpt_path = out / CHECKPOINT_NAME
        saved = None
        if resume:
            saved = load_checkpoint(ckpt_path)  # a clear error when missing or damaged
            _check_resumable(saved.train_config, settings, ckpt_path)
        elif ckpt_path.exists() and not overwrite:
            raise FileExistsError(
                f"{ckpt_path} already holds a checkpoint; resume it (--resume) or start again "
                "(--overwrite)"
            )
        if base is None:
            base, tokenizer = _load_base(checkpoint, tokenizer_path)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer with the base model")
        torch.manual_seed(settings.seed)
        job = _make_job(settings, base, tokenizer, docs)
        model = job.model
        params = [p for p in model.parameters() if p.requires_grad]
        trainable, total = ft.count_parameters(model)

        optimizer = configure_optimizer(
            model, learning_rate=settings.learning_rate, weight_decay=0.0, device_type="cpu"
        )
        gen = torch.Generator().manual_seed(settings.seed)
        step, seconds, losses = 0, 0.0, []
        if saved is not None:
            load_model_state(model, saved)
            if saved.optimizer_state is None:
                raise CheckpointError(f"{ckpt_path} holds no optimizer state to resume from")
            optimizer.load_state_dict(saved.optimizer_state)
            restore_rng((saved.rng_states or [{}])[0], gen)
            step = saved.step
            seconds = float(saved.metrics.get("seconds", 0.0))
            losses = list(saved.metrics.get("losses", []))
        out.mkdir(parents=True, exist_ok=True)
        fingerprint = job.tokenizer.fingerprint() if hasattr(job.tokenizer, "fingerprint") else None

        def save() -> None:
            save_checkpoint(
                ckpt_path,
                model,
                step=step,
                optimizer=optimizer,
                train_config={"finetune": settings.to_dict()},
                rng_states=[rng_snapshot(gen)],
                metrics={"seconds": seconds, "losses": losses},
                tokenizer_fingerprint=fingerprint,
            )

        if hasattr(job.tokenizer, "save"):
            job.tokenizer.save(out / TOKENIZER_NAME)
        model.train()
        end = settings.steps if stop_after is None else min(settings.steps, stop_after)
        while step < end:
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, settings.steps, settings.learning_rate, settings.warmup)
            loss = job.loss(gen)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"the loss is {float(loss)} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            seconds += time.perf_counter() - start
            if step % save_every == 0 or step == end:
                save()
            if verbose and (step % max(1, settings.steps // 10) == 0 or step == end):
                print(f"step {step}/{settings.steps}: loss {losses[-1]:.4f}", flush=True)
        model.eval()
        results: dict[str, Any] = {
            "settings": settings.to_dict(),
            "learning_rate": settings.learning_rate,
            "step": step,
            "complete": step >= settings.steps,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "train_seconds": seconds,
            "final_loss": losses[-1] if losses else None,
        }
        if results["complete"]:
            results.update(job.score())
            if settings.forgetting_chars and job.lm is not None:
                results["bits_per_byte_before"], results["bits_per_byte_after"] = _forgetting(
                    base, job.lm, tokenizer, settings.forgetting_chars
                )
            if settings.method == "lora":
                save_adapter(model, out / "adapter")
        _atomic_json(out / RESULTS_NAME, results)
        return results


def _forgetting(base, model, tokenizer, chars: int) -> tuple[float, float]:
    val_docs = split_documents(prepare_corpus(), (0.9, 0.05, 0.05), seed=0)["val"]
    text = "\n\n".join(d.text for d in val_docs)[:chars]
    return forgetting(base, model, tokenizer, text)


@torch.no_grad()
def forgetting(
    before: nn.Module, after: nn.Module, tokenizer, text: str, **kwargs
) -> tuple[float, float]:
    """Bits per byte of ``text`` (held-out pretraining text) under both models: (before, after).

    Their difference is the forgetting: how much worse the fine-tuned model models the
    pretraining distribution. Extra keywords go to :func:`minillm.evaluate.metrics.bits_per_byte`.
    """
    return (
        float(bits_per_byte(before, tokenizer, text, **kwargs)),
        float(bits_per_byte(after, tokenizer, text, **kwargs)),
    )
