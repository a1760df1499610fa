"""A small instruction set made from the bundled plays, split by play (lesson 08).

Nothing is shipped: :func:`build_instructions` makes the examples deterministically from
:func:`minillm.data.prepare_corpus` every time (well under a second). How it is built:

1. **Plays only.** The poems (Sonnets, Lucrece, ...) have no speakers and no genre, so they
   are left out. Each play is cut into *speeches*: a block that starts with a line in capitals
   ending with a full stop (``HAMLET.``) is a speech by that speaker; stage directions in
   brackets are dropped, and so is the cast list before the first speech.
2. **Split by play.** :data:`EVAL_PLAYS` (two plays of each genre, including the two plays the
   course model never saw in pretraining: *Macbeth* and *Pericles*) form the evaluation split;
   every other play is training data. No line of an evaluation play is in the training split.
3. **Tasks** (prompt → answer), sampled per play with ``random.Random(f"{seed}:{play}:{task}")``
   so each play's examples do not depend on the others:

   - ``speaker``: "Who speaks the last line?" over three consecutive speeches (first lines
     only, the last speaker hidden); the answer is the hidden speaker's name.
   - ``genre``: "Comedy, tragedy or history?" for a passage of a few lines; the answer follows
     the First Folio's grouping (:data:`GENRES`; *Pericles*, not in the Folio, counted with the
     comedies as the romance it is; *Cymbeline* and *Troilus* with the tragedies, as the Folio).
   - ``continue``: "Continue the verse:" a line of a speech; the answer is the next line.
   - ``play``: "Which play is this from?" for a passage; the answer is the play's title.

4. **Preference pairs** (:func:`preference_pairs`): each example with a wrong answer of the
   same kind, a hard one where possible (the other speaker of the exchange, another genre,
   another line of the same play, another play).

Limits, read before trusting a number built on it:

- Titles of evaluation plays are never training answers, so ``play`` can only be right on an
  evaluation play by chance or from pretraining; it measures what fine-tuning cannot teach.
- ``speaker`` has a strong shortcut: in a dialogue of two the last speaker is often the first
  one, which :func:`speaker_shortcut` implements as a baseline.
- The genre labels are a convention (the Folio's), there are only three, and passages of the
  same play are not independent, so intervals over examples are optimistic.
- The speech parser relies on the Gutenberg layout; a few speeches of songs and prologues are
  missed or mislabeled.
- Most evaluation plays *were* in the pretraining data (only *Macbeth* and *Pericles* were not),
  so an evaluation play is new to the fine-tuning, not always to the model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from minillm.data.pipeline import prepare_corpus

__all__ = [
    "GENRES",
    "EVAL_PLAYS",
    "validation_plays",
    "TASKS",
    "Speech",
    "Example",
    "PreferencePair",
    "parse_speeches",
    "play_genre",
    "build_instructions",
    "preference_pairs",
    "speaker_shortcut",
]

# The First Folio's three groups (Pericles added with the comedies: see the module docstring).
GENRES: dict[str, str] = {
    **dict.fromkeys(
        [
            "The Tempest",
            "Two Gentlemen of Verona",
            "The Merry Wives of Windsor",
            "Measure for Measure",
            "The Comedy of Errors",
            "Much Ado About Nothing",
            "Love's Labour's Lost",
            "A Midsummer Night's Dream",
            "The Merchant of Venice",
            "As You Like It",
            "The Taming of the Shrew",
            "All's Well That Ends Well",
            "Twelfth Night",
            "The Winter's Tale",
            "Pericles",
        ],
        "comedy",
    ),
    **dict.fromkeys(
        [
            "King John",
            "King Richard II",
            "King Henry IV, Part 1",
            "King Henry IV, Part 2",
            "King Henry V",
            "King Henry VI, Part 1",
            "King Henry VI, Part 2",
            "King Henry VI, Part 3",
            "King Richard III",
            "King Henry VIII",
        ],
        "history",
    ),
    **dict.fromkeys(
        [
            "Troilus and Cressida",
            "Coriolanus",
            "The Tragedy of Titus Andronicus",
            "Romeo and Juliet",
            "Timon of Athens",
            "Julius Caesar",
            "Macbeth",
            "Hamlet",
            "King Lear",
            "Othello",
            "Antony and Cleopatra",
            "Cymbeline",
        ],
        "tragedy",
    ),
}
"""Play title -> "comedy", "history" or "tragedy"."""

EVAL_PLAYS: tuple[str, ...] = (
    "Macbeth",
    "Othello",
    "Pericles",
    "Twelfth Night",
    "King John",
    "King Richard II",
)
"""The held-out plays: two per genre; never seen by fine-tuning."""

TASKS: tuple[str, ...] = ("speaker", "genre", "continue", "play")


def validation_plays(per_genre: int = 2, seed: int = 0) -> tuple[str, ...]:
    """Training plays held out to choose settings: ``per_genre`` of each genre, drawn with ``seed``.

    Settings chosen on these plays never look at :data:`EVAL_PLAYS`, whose scores stay honest.
    """
    training = sorted(title for title in GENRES if title not in EVAL_PLAYS)
    rng = random.Random(seed)
    return tuple(
        play
        for genre in ("comedy", "history", "tragedy")
        for play in rng.sample([t for t in training if GENRES[t] == genre], per_genre)
    )


# "HAMLET." / "Ber." / "First Witch." / "THESEUS": a short capitalised line that heads a block.
_SPEAKER = re.compile(r"^([A-Z][A-Za-z']*(?: (?:[A-Z][A-Za-z']*|of|and|the|de)){0,3})(\.?)$")
_HEADINGS = ("ACT", "SCENE", "Scene", "EPILOGUE", "PROLOGUE", "THE END", "Enter", "Exit")
_DIRECTION = re.compile(r"^\s*\[.*\]\s*$")


@dataclass(frozen=True)
class Speech:
    """One speech: who speaks and the spoken lines (stage directions removed)."""

    speaker: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    """One instruction: ``prompt`` → ``answer``, with where it came from."""

    task: str
    prompt: str
    answer: str
    play: str
    split: str


@dataclass(frozen=True)
class PreferencePair:
    """An instruction with a preferred (correct) and a rejected (wrong) answer."""

    prompt: str
    chosen: str
    rejected: str
    task: str
    play: str


def parse_speeches(text: str) -> list[Speech]:
    """The speeches of a play in order (speaker in capitals on its own line, then the lines)."""
    speeches = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().splitlines()]
        if len(lines) < 2:
            continue
        match = _SPEAKER.match(lines[0])
        if not match or lines[0].startswith(_HEADINGS):
            continue
        if not match.group(2) and not match.group(1).isupper():
            continue  # without the full stop, only an all-capitals name counts
        spoken = tuple(
            line for line in lines[1:] if line and not _DIRECTION.match(line) and "[" not in line
        )
        if spoken:
            speeches.append(Speech(match.group(1), spoken))
    return speeches


def play_genre(title: str) -> str:
    """The genre of a play title.

    Raises:
        ValueError: not one of the plays in :data:`GENRES`.
    """
    if title not in GENRES:
        raise ValueError(f"{title!r} is not a known play; known: {sorted(GENRES)}")
    return GENRES[title]


def _clip(line: str, max_chars: int) -> str:
    return line if len(line) <= max_chars else line[:max_chars].rsplit(" ", 1)[0] + " ..."


def _passage(speeches: list[Speech], rng: random.Random, max_chars: int) -> str:
    start = rng.randrange(len(speeches))
    lines: list[str] = []
    for speech in speeches[start:]:
        for line in speech.lines:
            if sum(len(x) + 1 for x in lines) + len(line) > max_chars:
                return "\n".join(lines) if lines else _clip(line, max_chars)
            lines.append(line)
    return "\n".join(lines)


def _speaker_examples(speeches, rng, n, max_chars):
    out = []
    starts = [i for i in range(len(speeches) - 2)]
    for i in rng.sample(starts, min(n, len(starts))):
        a, b, c = speeches[i : i + 3]
        body = "\n".join(
            [
                f"{a.speaker}: {_clip(a.lines[0], max_chars)}",
                f"{b.speaker}: {_clip(b.lines[0], max_chars)}",
                f"?: {_clip(c.lines[0], max_chars)}",
            ]
        )
        out.append((f"Who speaks the last line?\n{body}", c.speaker))
    return out


def _continue_examples(speeches, rng, n, max_chars):
    pairs = [
        (line, nxt)
        for s in speeches
        for line, nxt in zip(s.lines, s.lines[1:], strict=False)
        if len(line) > 20 and len(nxt) > 20 and len(line) <= max_chars and len(nxt) <= max_chars
    ]
    return [
        (f"Continue the verse:\n{line}", nxt) for line, nxt in rng.sample(pairs, min(n, len(pairs)))
    ]


def _passage_examples(speeches, rng, n, max_chars, question, answer):
    return [(f"{question}\n{_passage(speeches, rng, max_chars)}", answer) for _ in range(n)]


def build_instructions(
    per_play: int = 40,
    *,
    tasks: Sequence[str] = TASKS,
    eval_plays: Sequence[str] = EVAL_PLAYS,
    max_chars: int = 160,
    seed: int = 0,
    docs: Sequence | None = None,
) -> dict[str, list[Example]]:
    """The instruction set, ``{"train": [...], "eval": [...]}``, deterministically.

    Args:
        per_play: examples of each task per play.
        tasks: which of :data:`TASKS` to make.
        eval_plays: titles held out for evaluation (all must be known plays).
        max_chars: longest passage or line, in characters (keeps prompts inside a short context).
        seed: changes the sampled examples (not the split).
        docs: the corpus documents (default: :func:`minillm.data.prepare_corpus`).

    Raises:
        ValueError: an unknown task or evaluation play, or a non-positive size.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or list(tasks)}; choose from {TASKS}")
    bad = sorted(set(eval_plays) - set(GENRES))
    if bad:
        raise ValueError(f"eval_plays {bad} are not known plays; known: {sorted(GENRES)}")
    for name, value in (("per_play", per_play), ("max_chars", max_chars)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if docs is None:
        docs = prepare_corpus()
    out: dict[str, list[Example]] = {"train": [], "eval": []}
    for doc in docs:
        if doc.title not in GENRES:
            continue
        speeches = parse_speeches(doc.text)
        split = "eval" if doc.title in eval_plays else "train"
        for task in tasks:
            rng = random.Random(f"{seed}:{doc.title}:{task}")
            if task == "speaker":
                made = _speaker_examples(speeches, rng, per_play, max_chars // 2)
            elif task == "continue":
                made = _continue_examples(speeches, rng, per_play, max_chars // 2)
            elif task == "genre":
                made = _passage_examples(
                    speeches,
                    rng,
                    per_play,
                    max_chars,
                    "Comedy, tragedy or history?",
                    GENRES[doc.title],
                )
            else:
                made = _passage_examples(
                    speeches, rng, per_play, max_chars, "Which play is this from?", doc.title
                )
            out[split].extend(Example(task, p, a, doc.title, split) for p, a in made)
    return out


def _wrong_answer(
    example: Example, pool: dict[tuple[str, str], list[str]], rng: random.Random
) -> str:
    if example.task == "speaker":  # the other speaker of the exchange: the hardest negative
        names = [line.split(":", 1)[0] for line in example.prompt.splitlines()[1:-1]]
        others = [n for n in names if n != example.answer]
        if others:
            return others[0]
    if example.task == "genre":
        return rng.choice([g for g in ("comedy", "tragedy", "history") if g != example.answer])
    candidates = [a for a in pool[(example.task, example.play)] if a != example.answer]
    if example.task == "play" or not candidates:
        candidates = [
            a
            for (t, _), answers in pool.items()
            if t == example.task
            for a in answers
            if a != example.answer
        ]
    if example.task == "play" and not candidates:
        candidates = [title for title in GENRES if title != example.answer]
    if not candidates:
        raise ValueError(f"no wrong answer for a {example.task!r} example of {example.play}")
    return rng.choice(sorted(set(candidates)))


def preference_pairs(examples: Sequence[Example], seed: int = 0) -> list[PreferencePair]:
    """Each example with its correct answer preferred over a wrong one (see the module docstring)."""
    pool: dict[tuple[str, str], list[str]] = {}
    for ex in examples:
        pool.setdefault((ex.task, ex.play), []).append(ex.answer)
    rng = random.Random(seed)
    return [
        PreferencePair(ex.prompt, ex.answer, _wrong_answer(ex, pool, rng), ex.task, ex.play)
        for ex in examples
    ]


def speaker_shortcut(prompt: str) -> str:
    """The ``speaker`` baseline: guess that the first speaker of the exchange speaks again."""
    lines = prompt.splitlines()
    if len(lines) < 4:
        raise ValueError("not a speaker prompt: expected a question and three lines")
    return lines[1].split(":", 1)[0]
