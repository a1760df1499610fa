"""The evaluation harness: run a list of tasks on a model and report, for people and machines.

Taught in lesson 09 (evaluation), on top of :mod:`minillm.evaluate.metrics`.
``evaluate(model, tokenizer, tasks)`` runs each task and returns an :class:`EvalReport`, whose
``str()`` is a table and whose ``to_json()`` is the same figures for scripts.
``minillm eval --checkpoint CKPT --tasks cloze,bias,perplexity:FILE`` does it from the command
line on a checkpoint written by :func:`minillm.train.save_checkpoint`.

Tasks (objects, or the strings :func:`resolve_task` understands):

* ``perplexity:PATH``: perplexity and bits per byte, per document, on a ``.txt`` file or a
  folder of them (:class:`PerplexityTask`).
* ``cloze`` or ``mc:PATH``: multiple choice by log-likelihood; ``cloze`` is the bundled set of
  20 famous Shakespeare lines (:class:`MultipleChoiceTask`).
* ``bias`` or ``bias:PATH``: the bundled bias-probe pairs, or your own
  (:class:`BiasProbeTask`); read ``minillm/assets/probes/README.md`` for their limits.
* ``generation:PATH``: greedy continuations of passages cut from a text, scored with BLEU and
  ROUGE against what the text really says next (:class:`GenerationTask`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

import minillm.evaluate.metrics as M
from minillm.evaluate.bias import BiasProbe, bias_probe_gaps
from minillm.utils.assets import asset_path

PROBES_DIR = asset_path("probes")
BIAS_PROBES_PATH = PROBES_DIR / "bias_pairs.jsonl"
CLOZE_PATH = PROBES_DIR / "shakespeare_cloze.jsonl"


# ---------------------------------------------------------------------------------------------
# Task data
# ---------------------------------------------------------------------------------------------


# field -> (check, what the field must be); every task line is validated by type before use
_Schema = dict[str, tuple[Callable[[Any], bool], str]]


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_choices(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 2 and all(isinstance(c, str) for c in value)


_MULTIPLE_CHOICE: _Schema = {
    "context": (_is_text, "a string"),
    "choices": (_is_choices, "a list of at least 2 strings"),
    "answer": (_is_index, "an integer index into choices"),
    "id": (_is_text, "a string"),
}
_BIAS_PROBE: _Schema = {
    "category": (_is_text, "a string"),
    "template": (_is_text, "a string"),
    "a": (_is_text, "a string"),
    "b": (_is_text, "a string"),
    "favours": (lambda v: v in ("a", "b", None), '"a", "b" or null'),
    "id": (_is_text, "a string"),
}


def _read_jsonl(
    path: str | Path, required: Sequence[str], schema: _Schema | None = None
) -> list[dict[str, Any]]:
    """The JSON objects of a task file, one a line; each present field checked by ``schema``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line is not a JSON object, lacks a required field, or holds a field of
            the wrong type (the message names the file, the line and what is allowed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no task file at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason}); expected JSONL") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not valid JSON: {err}") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number} must be a JSON object, got {type(row).__name__}")
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"{path}:{number} lacks the fields {missing}; needs {list(required)}")
        for key, (check, what) in (schema or {}).items():
            if key in row and not check(row[key]):
                raise ValueError(f"{path}:{number}: {key!r} must be {what}, got {row[key]!r}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no items")
    return rows


def load_bias_probes(path: str | Path = BIAS_PROBES_PATH) -> list[BiasProbe]:
    """Bias-probe pairs from JSONL (fields ``category, template, a, b``, optional ``favours, id``)."""
    rows = _read_jsonl(path, ["category", "template", "a", "b"], _BIAS_PROBE)
    probes = []
    for i, r in enumerate(rows):
        try:
            probes.append(
                BiasProbe(
                    category=r["category"],
                    template=r["template"],
                    a=r["a"],
                    b=r["b"],
                    favours=r.get("favours"),
                    id=r.get("id", f"probe{i}"),
                )
            )
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return probes


def load_multiple_choice(path: str | Path = CLOZE_PATH) -> list[M.MultipleChoiceItem]:
    """Multiple-choice items from JSONL (fields ``context, choices, answer``, optional ``id``)."""
    rows = _read_jsonl(path, ["context", "choices", "answer"], _MULTIPLE_CHOICE)
    items = []
    for r in rows:
        try:
            items.append(
                M.MultipleChoiceItem(
                    r["context"], tuple(r["choices"]), r["answer"], r.get("id", "")
                )
            )
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return items


def read_documents(path: str | Path) -> list[tuple[str, str]]:
    """``(name, text)`` for a ``.txt`` file, or for every ``.txt`` file in a folder (sorted)."""
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no .txt file at {path}")
    return [(f.stem, f.read_text(encoding="utf-8")) for f in files]


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """One task's headline figures (``metrics``) and its per-item rows (``rows``)."""

    task: str
    metrics: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class Task(Protocol):
    name: str

    def run(self, model: Callable[..., Any], tokenizer: Any) -> TaskResult: ...


@dataclass
class PerplexityTask:
    """Perplexity and bits per byte of each document, and of all of them together."""

    documents: list[tuple[str, str]]
    name: str = "perplexity"
    stride: int | None = None
    batch_size: int = 8

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> PerplexityTask:
        return cls(read_documents(path), **kwargs)

    def run(self, model: Callable[..., Any], tokenizer: Any) -> TaskResult:
        scores = M.score_documents(
            model, tokenizer, self.documents, stride=self.stride, batch_size=self.batch_size
        )
        total = M.LMScore.combine(scores)
        metrics = {
            "perplexity": total.perplexity,
            "bits_per_byte": total.bits_per_byte,
            "loss": total.mean_nll,
            "tokens": total.n_tokens,
        }
        return TaskResult(self.name, metrics, [s.as_dict() for s in scores])


@dataclass
class MultipleChoiceTask:
    """Accuracy of picking the most likely choice (summed, and per-token log-likelihood)."""

    items: list[M.MultipleChoiceItem]
    name: str = "multiple_choice"
    batch_size: int = 16

    def run(self, model: Callable[..., Any], tokenizer: Any) -> TaskResult:
        result = M.score_multiple_choice(model, tokenizer, self.items, batch_size=self.batch_size)
        metrics = {
            "accuracy": result.accuracy,
            "accuracy_norm": result.accuracy_norm,
            "chance": sum(1 / len(item.choices) for item in self.items) / len(self.items),
            "items": len(self.items),
        }
        rows = [
            {
                "id": item.id,
                "context": item.context,
                "answer": item.choices[item.answer],
                "picked": item.choices[pick],
                "picked_norm": item.choices[pick_norm],
                "logprobs": logprobs,
            }
            for item, pick, pick_norm, logprobs in zip(
                self.items,
                result.predictions,
                result.predictions_norm,
                result.logprobs,
                strict=True,
            )
        ]
        return TaskResult(self.name, metrics, rows)


@dataclass
class BiasProbeTask:
    """Mean log-probability gaps of probe pairs per (category, kind), with bootstrap intervals."""

    probes: list[BiasProbe]
    name: str = "bias"
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0

    def run(self, model: Callable[..., Any], tokenizer: Any) -> TaskResult:
        result = bias_probe_gaps(
            model,
            tokenizer,
            self.probes,
            confidence=self.confidence,
            n_resamples=self.n_resamples,
            seed=self.seed,
        )
        metrics: dict[str, float] = {}
        for row in result.table():
            key = f"{row['category']}/{row['kind']}"
            metrics[f"{key}/mean_gap"] = row["mean_gap"]
            metrics[f"{key}/ci_low"] = row["ci_low"]
            metrics[f"{key}/ci_high"] = row["ci_high"]
        rows = [
            {"id": p.id, "category": p.category, "kind": p.kind, "a": p.sentences[0],
             "b": p.sentences[1], "gap": gap, "toward_stereotype_or_a": p.oriented(gap)}
            for p, gap in zip(result.probes, result.gaps, strict=True)
        ]  # fmt: skip
        return TaskResult(self.name, metrics, rows)


def greedy_continuation(
    model: Callable[..., Any],
    ids: Sequence[int],
    max_new_tokens: int,
    *,
    block_size: int | None = None,
) -> list[int]:
    """The ``max_new_tokens`` most likely next tokens, one at a time (no cache: short outputs)."""
    block_size = M.context_length(model, block_size)
    idx = torch.tensor([list(ids)], dtype=torch.long)
    device = M._model_device(model)
    with M._EvalMode(model):
        for _ in range(max_new_tokens):
            logits = M.model_logits(model, idx[:, -block_size:].to(device))
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True).cpu()], dim=1)
    return idx[0, len(ids) :].tolist()


@dataclass
class GenerationTask:
    """Greedy continuations of prompts, scored against references with BLEU and ROUGE."""

    prompts: list[str]
    references: list[str]
    name: str = "generation"
    max_new_tokens: int = 24

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.references):
            raise ValueError(
                f"got {len(self.prompts)} prompts but {len(self.references)} references"
            )
        if not self.prompts:
            raise ValueError("a generation task needs at least one prompt")

    @classmethod
    def from_text(
        cls,
        text: str,
        tokenizer: Any,
        *,
        n: int = 8,
        prompt_tokens: int = 48,
        reference_tokens: int = 24,
        **kwargs: Any,
    ) -> GenerationTask:
        """Cut ``n`` evenly spaced (prompt, true continuation) pairs out of a text."""
        ids = list(tokenizer.encode(text))
        span = prompt_tokens + reference_tokens
        if len(ids) < span:
            raise ValueError(
                f"the text has {len(ids)} tokens; need at least {span} to cut a sample"
            )
        starts = [round(i * (len(ids) - span) / max(n - 1, 1)) for i in range(n)]
        prompts = [tokenizer.decode(ids[s : s + prompt_tokens]) for s in starts]
        references = [tokenizer.decode(ids[s + prompt_tokens : s + span]) for s in starts]
        return cls(prompts, references, max_new_tokens=reference_tokens, **kwargs)

    def run(self, model: Callable[..., Any], tokenizer: Any) -> TaskResult:
        outputs = [
            tokenizer.decode(greedy_continuation(model, tokenizer.encode(p), self.max_new_tokens))
            for p in self.prompts
        ]
        bleu = M.corpus_bleu(outputs, self.references)
        rouge = M.corpus_rouge(outputs, self.references, types=["rouge1", "rouge2", "rougeL"])
        metrics = {"bleu": bleu.score, **{f"{k}_f": v.fmeasure for k, v in rouge.items()}}
        rows = [
            {
                "prompt": p,
                "reference": r,
                "output": o,
                "sentence_bleu": M.sentence_bleu(o, r).score,
                "rougeL_f": M.rouge(o, r, types=["rougeL"])["rougeL"].fmeasure,
            }
            for p, r, o in zip(self.prompts, self.references, outputs, strict=True)
        ]
        return TaskResult(self.name, metrics, rows)


TASK_NAMES = ("perplexity:PATH", "cloze", "mc:PATH", "bias", "bias:PATH", "generation:PATH")


def resolve_task(spec: str | Task, tokenizer: Any = None) -> Task:
    """A task object from a spec string (see the module docstring); task objects pass through."""
    if not isinstance(spec, str):
        if not callable(getattr(spec, "run", None)):
            raise TypeError(f"a task is a spec string or has a .run method; got {spec!r:.80}")
        return spec
    kind, _, path = spec.partition(":")
    if kind == "cloze" and not path:
        return MultipleChoiceTask(load_multiple_choice(CLOZE_PATH), name="cloze")
    if kind == "bias":
        return BiasProbeTask(load_bias_probes(path or BIAS_PROBES_PATH))
    if kind in ("mc", "cloze") and path:
        return MultipleChoiceTask(load_multiple_choice(path), name=Path(path).stem)
    if kind == "perplexity" and path:
        return PerplexityTask.from_path(path)
    if kind == "generation" and path:
        if tokenizer is None:
            raise ValueError("the generation task needs the tokenizer to cut its prompts")
        text = "\n".join(text for _, text in read_documents(path))
        return GenerationTask.from_text(text, tokenizer)
    raise ValueError(f"unknown task {spec!r}; allowed: {', '.join(TASK_NAMES)}")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


@dataclass
class EvalReport:
    """The results of :func:`evaluate`: ``str(report)`` is a table, ``to_json()`` the data."""

    results: list[TaskResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, task: str) -> TaskResult:
        for result in self.results:
            if result.task == task:
                return result
        raise KeyError(f"no task {task!r} in this report; it has {[r.task for r in self.results]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "tasks": {
                r.task: {"metrics": r.metrics, "seconds": r.seconds, "rows": r.rows}
                for r in self.results
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)

    def table(self) -> str:
        lines = [("task", "metric", "value")]
        for r in self.results:
            lines += [(r.task, name, _format_value(v)) for name, v in r.metrics.items()]
        widths = [max(len(row[i]) for row in lines) for i in range(3)]
        out = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in lines]
        out.insert(1, "-" * len(out[0]))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def evaluate(
    model: Callable[..., Any],
    tokenizer: Any,
    tasks: Sequence[str | Task],
    *,
    verbose: bool = False,
) -> EvalReport:
    """Run each task on the model and collect the results in one report.

    Args:
        model: returns logits or ``(logits, loss)`` for a ``(batch, time)`` tensor of ids.
        tokenizer: has ``encode`` and ``decode`` (``minillm.BPETokenizer`` or tiktoken).
        tasks: task objects or spec strings (see :func:`resolve_task`).
        verbose: print each task's line as it finishes.
    """
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    if not tasks:
        raise ValueError(f"no tasks to run; choose from {', '.join(TASK_NAMES)}")
    resolved = [resolve_task(t, tokenizer) for t in tasks]
    names = [t.name for t in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"two tasks share a name: {names}; give them distinct names")
    results = []
    for task in resolved:
        start = time.perf_counter()
        result = task.run(model, tokenizer)
        result.seconds = time.perf_counter() - start
        results.append(result)
        if verbose:
            shown = ", ".join(
                f"{k}={_format_value(v)}" for k, v in list(result.metrics.items())[:4]
            )
            print(f"{task.name}: {shown} ({result.seconds:.1f} s)", flush=True)
    meta = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters())
        if hasattr(model, "parameters")
        else None,
        "block_size": getattr(getattr(model, "config", None), "block_size", None),
        "torch": torch.__version__,
    }
    return EvalReport(results, meta)
