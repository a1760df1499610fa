"""Train the course chat model, score it on held-out plays, and write it into the package.

    python scripts/ship_chat_model.py               # train CHAT_TRAIN from the shipped base model,
                                                    # score on the evaluation plays, ship it
    python scripts/ship_chat_model.py --validation  # the same run holding out the validation plays
                                                    # (training plays; the evaluation plays are not
                                                    # read): for choosing the recipe; ships nothing
    python scripts/ship_chat_model.py --steps 50 --out DIR   # a short run into DIR, nothing shipped

Writes ``minillm/assets/chat_model/`` (``model.safetensors``, ``tokenizer.bpe`` with the chat
tokens, ``chat_template.jinja``, ``card.json``), where ``minillm.course_model("chat")`` finds it.
The card records the recipe (``minillm.course.CHAT_TRAIN``), the training seconds, the CPU and its
load, SHA-256 fingerprints of every file, and per task the held-out scores of the base model
prompted (the play-script prompt of ``minillm serve``), of the chat model (greedy, through the chat
template) and of the strongest no-model baseline, each with a 95% bootstrap interval over examples
(passages of one play are not independent, so the intervals are optimistic). It prints the greedy
answers of both models to five held-out prompts.

Scoring (the same for every system):
- ``speaker`` and ``genre``: the first line of the answer, stripped of spaces and a final
  full stop, equals the reference (case-insensitive);
- ``continue``: a rule on the generated line, since any continuation may be good verse: it ends
  (the model stops: ``<|end|>`` for the chat model, a newline for the base model) within 32 tokens,
  has 4 to 14 words, starts with a capital letter, has at least 3 distinct words, and is not a copy
  of the line it continues. The rule checks form, not meaning.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from minillm.course import (
    CHAT_DIR,
    CHAT_TRAIN,
    SHIPPED_CARD,
    SHIPPED_WEIGHTS,
    course_model,
    load_shipped_chat_model,
    shipped_card,
    train_chat_model,
)
from minillm.data import prepare_corpus
from minillm.evaluate import bootstrap_ci
from minillm.finetune import (
    CHAT_TEMPLATE_FILE,
    EVAL_PLAYS,
    ChatFormat,
    build_instructions,
    speaker_shortcut,
    validation_plays,
)
from minillm.serve import chat_prompt
from minillm.tokenizer import BPETokenizer
from minillm.train import TOKENIZER_NAME, load_checkpoint
from minillm.utils import cpu_name, sha256_file

EVAL_PER_PLAY = 16  # held-out examples of each task per held-out play
MAX_NEW = {"speaker": 8, "genre": 6, "continue": 32}
SHIPPED_FILES = (SHIPPED_WEIGHTS, TOKENIZER_NAME, CHAT_TEMPLATE_FILE)


# ---- answers ------------------------------------------------------------------------------------


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new: int, stop_id: int | None) -> list[list[int]]:
    """Greedy continuations, batched over prompts of equal length (the GPT has no padding mask)."""
    out: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)
    block = model.config.block_size
    for length, rows in by_length.items():
        new = min(max_new, block - length)
        ids = torch.tensor([prompts[i] for i in rows])
        tokens = model.generate(ids, new, temperature=0.0)[:, length:].tolist()
        for i, row in zip(rows, tokens, strict=True):
            out[i] = row[: row.index(stop_id) + 1] if stop_id in row else row
    return out


def chat_answers(model, tokenizer, examples) -> list[tuple[str, bool]]:
    """(answer text, stopped) of the chat model through the chat template."""
    chat = ChatFormat(tokenizer)
    answers = []
    for task in MAX_NEW:
        picked = [i for i, e in enumerate(examples) if e.task == task]
        gens = greedy(
            model, [chat.prompt_ids(examples[i].prompt) for i in picked], MAX_NEW[task], chat.end_id
        )
        answers += [(i, g) for i, g in zip(picked, gens, strict=True)]
    result: list[tuple[str, bool]] = [("", False)] * len(examples)
    for i, g in answers:
        stopped = bool(g) and g[-1] == chat.end_id
        result[i] = (tokenizer.decode(g[:-1] if stopped else g), stopped)
    return result


def base_answers(model, tokenizer, examples) -> list[tuple[str, bool]]:
    """(first line of the answer, stopped) of the base model with the server's play-script prompt."""
    answers: list[tuple[str, bool]] = [("", False)] * len(examples)
    for task in MAX_NEW:
        picked = [i for i, e in enumerate(examples) if e.task == task]
        prompts = [
            tokenizer.encode_ordinary(
                chat_prompt([{"role": "user", "content": examples[i].prompt}])
            )
            for i in picked
        ]
        for i, g in zip(picked, greedy(model, prompts, MAX_NEW[task], None), strict=True):
            text = tokenizer.decode(g)
            answers[i] = (text.split("\n", 1)[0], "\n" in text)
    return answers


# ---- scoring ------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


def continue_ok(prompt: str, answer: str, stopped: bool) -> bool:
    """The ``continue`` rule (see the module docstring)."""
    words = re.findall(r"[A-Za-z']+", answer)
    given = prompt.split("\n", 1)[1].strip()
    return (
        stopped
        and 4 <= len(answer.split()) <= 14
        and answer.strip()[:1].isupper()
        and len({w.lower() for w in words}) >= 3
        and _norm(answer) != _norm(given)
        and "\n" not in answer.strip()
    )


def score(example, answer: str, stopped: bool) -> float:
    if example.task == "continue":
        return float(continue_ok(example.prompt, answer, stopped))
    return float(_norm(answer.split("\n", 1)[0]) == _norm(example.answer))


def genre_bayes(train) -> Callable[[str], str]:
    """Multinomial naive Bayes on the passages' lower-cased words (add-one smoothing)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    priors: Counter = Counter()
    for e in train:
        if e.task == "genre":
            priors[e.answer] += 1
            counts[e.answer].update(re.findall(r"[a-z']+", e.prompt.split("\n", 1)[1].lower()))
    vocab = set().union(*counts.values())

    def predict(prompt: str) -> str:
        words = re.findall(r"[a-z']+", prompt.split("\n", 1)[1].lower())
        best = None
        for label, c in counts.items():
            total = sum(c.values()) + len(vocab)
            logp = math.log(priors[label]) + sum(math.log((c[w] + 1) / total) for w in words)
            best = max(best or (logp, label), (logp, label))
        return best[1]

    return predict


def baselines(train, held) -> dict[str, dict[str, list[float]]]:
    """Per task, each no-model baseline's per-example scores on ``held``."""
    rng = random.Random(0)
    majority = Counter(e.answer for e in train if e.task == "genre").most_common(1)[0][0]
    bayes = genre_bayes(train)
    lines = [e.answer for e in train if e.task == "continue"]
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for task, name, guess in (
        ("speaker", "first speaker speaks again", lambda e: speaker_shortcut(e.prompt)),
        ("genre", f"majority ({majority})", lambda e: majority),
        ("genre", "naive Bayes on words", lambda e: bayes(e.prompt)),
        ("continue", "repeat the line", lambda e: e.prompt.split("\n", 1)[1]),
        ("continue", "a random training line", lambda e: rng.choice(lines)),
    ):
        out[task][name] = [score(e, guess(e), True) for e in held if e.task == task]
    return out


def ci(values: list[float]) -> dict[str, float]:
    est = bootstrap_ci(values, n_resamples=2000, seed=0)
    return {
        "mean": round(est.mean, 4),
        "low": round(est.low, 4),
        "high": round(est.high, 4),
        "n": est.n,
    }


def evaluate(chat_model, chat_tok, held_out: tuple[str, ...], docs) -> tuple[dict, list]:
    data = build_instructions(
        EVAL_PER_PLAY,
        tasks=list(MAX_NEW),
        eval_plays=held_out,
        max_chars=CHAT_TRAIN["max_chars"],
        seed=1,
        docs=docs,
    )
    train = build_instructions(
        CHAT_TRAIN["per_play"],
        tasks=list(MAX_NEW),
        eval_plays=held_out,
        max_chars=CHAT_TRAIN["max_chars"],
        seed=CHAT_TRAIN["seed"],
        docs=docs,
    )["train"]
    held = data["eval"]
    base, base_tok = course_model(verbose=False)
    start = time.perf_counter()
    answers = {
        "base model, prompted": base_answers(base.eval(), base_tok, held),
        "chat model": chat_answers(chat_model.eval(), chat_tok, held),
    }
    seconds = time.perf_counter() - start
    report: dict = {}
    for task in MAX_NEW:
        rows = [i for i, e in enumerate(held) if e.task == task]
        report[task] = {
            name: ci([score(held[i], *got[i]) for i in rows]) for name, got in answers.items()
        }
        options = {k: ci(v) for k, v in baselines(train, held)[task].items()}
        best = max(options, key=lambda k: options[k]["mean"])
        report[task]["best no-model baseline"] = {"rule": best, **options[best]}
        report[task]["other baselines"] = {k: v for k, v in options.items() if k != best}
    shown = []
    for i in [next(i for i, e in enumerate(held) if e.task == t) for t in MAX_NEW] + [
        j for j, e in enumerate(held) if e.task == "continue"
    ][1:3]:
        shown.append(
            {
                "task": held[i].task,
                "play": held[i].play,
                "prompt": held[i].prompt,
                "reference": held[i].answer,
                **{name: got[i][0] for name, got in answers.items()},
            }
        )
    report["generation_seconds"] = round(seconds, 1)
    return report, shown


# ---- shipping -----------------------------------------------------------------------------------


def load_folder(folder: Path):
    model = load_checkpoint(folder / SHIPPED_WEIGHTS).build_model().eval()
    return model, BPETokenizer.load(folder / TOKENIZER_NAME)


def write_json_atomic(path: Path, data: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile makes it private; the card ships
    os.replace(tmp.name, path)


def ship(run_dir: Path, card: dict) -> None:
    CHAT_DIR.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        tmp = CHAT_DIR / f".{name}.tmp"
        shutil.copyfile(run_dir / name, tmp)
        os.replace(tmp, CHAT_DIR / name)
    card["sha256"] = {name: sha256_file(CHAT_DIR / name) for name in SHIPPED_FILES}
    write_json_atomic(CHAT_DIR / SHIPPED_CARD, card)
    load_shipped_chat_model()  # what users get loads and matches its card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--validation",
        action="store_true",
        help="hold out the validation plays; never read the evaluation plays",
    )
    parser.add_argument("--steps", type=int, default=None, help="override CHAT_TRAIN's steps")
    parser.add_argument("--out", type=Path, default=None, help="train into this folder (kept)")
    args = parser.parse_args()
    docs = prepare_corpus()
    held_out = EVAL_PLAYS
    if args.validation:
        docs = [d for d in docs if d.title not in EVAL_PLAYS]
        held_out = validation_plays()
    overrides = {"steps": args.steps} if args.steps else {}
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="chat-model-"))
    load_before = os.getloadavg()
    result = train_chat_model(run_dir, eval_plays=held_out, docs=docs, verbose=True, **overrides)
    load_after = os.getloadavg()
    model, tokenizer = load_folder(run_dir)
    scores, shown = evaluate(model, tokenizer, held_out, docs)
    card = {
        "format": "minillm-chat-model",
        "version": 1,
        "recipe": result["recipe"],
        "base_weights_sha256": (shipped_card() or {}).get("weights_sha256"),
        "model_config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": result["examples"],
        "train_seconds": round(result["seconds"], 1),
        "losses_every_10": [round(x, 4) for x in result["losses"][::10]],
        "held_out": "validation plays" if args.validation else "evaluation plays",
        "held_out_plays": list(held_out),
        "eval_examples_per_play_and_task": EVAL_PER_PLAY,
        "scores": scores,
        "answers": shown,
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "trained_at": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps({k: card[k] for k in ("train_seconds", "scores", "machine")}, indent=2))
    for row in shown:
        print(
            f"\n[{row['task']}, {row['play']}] {row['prompt']!r}\n  reference: {row['reference']!r}"
        )
        print(f"  base model, prompted: {row['base model, prompted']!r}")
        print(f"  chat model:           {row['chat model']!r}")
    if args.validation or args.out is not None and args.steps:
        write_json_atomic(run_dir / "card.json", card)
        print(f"\nnot shipped (validation or a short run): card in {run_dir / 'card.json'}")
        return
    ship(run_dir, card)
    print(f"\nshipped the chat model to {CHAT_DIR}")


if __name__ == "__main__":
    main()
