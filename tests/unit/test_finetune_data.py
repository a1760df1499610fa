"""The instruction set built from the plays (minillm.finetune.instructions)."""

from __future__ import annotations

import pytest

from minillm.data import Document
from minillm.finetune import (
    EVAL_PLAYS,
    GENRES,
    build_instructions,
    parse_speeches,
    preference_pairs,
    speaker_shortcut,
)

PLAY = """HAMLET

ACT I.

SCENE I. Elsinore.

[Enter Bernardo and Francisco.]

BERNARDO.
Who's there? Nay, answer me: stand, and unfold yourself.

FRANCISCO.
Long live the king! Long live the king, I say to you.
[Aside.]
You come most carefully upon your hour tonight.

BERNARDO.
'Tis now struck twelve; get thee to bed, Francisco, now.

Fran.
For this relief much thanks: 'tis bitter cold, and I am sick.
"""


def test_parse_speeches_finds_speakers_and_drops_directions():
    speeches = parse_speeches(PLAY)
    assert [s.speaker for s in speeches] == ["BERNARDO", "FRANCISCO", "BERNARDO", "Fran"]
    assert all("[" not in line for s in speeches for line in s.lines)
    assert len(speeches[1].lines) == 2


def fake_docs():
    return [
        Document(name=title.lower().replace(" ", "_"), text=PLAY * 3, title=title)
        for title in ["Hamlet", "Macbeth", "Twelfth Night", "King John"]
    ] + [Document(name="sonnets", text="Shall I compare thee", title="Sonnets")]


def test_split_is_by_play_and_deterministic():
    data = build_instructions(5, docs=fake_docs())
    assert {e.play for e in data["eval"]} == {"Macbeth", "Twelfth Night", "King John"}
    assert {e.play for e in data["train"]} == {"Hamlet"}
    assert data == build_instructions(5, docs=fake_docs())
    genre = [e for e in data["train"] if e.task == "genre"]
    assert genre and all(e.answer == GENRES["Hamlet"] for e in genre)


def test_the_real_corpus_holds_out_every_eval_play():
    data = build_instructions(3)
    train_plays = {e.play for e in data["train"]}
    assert not train_plays & set(EVAL_PLAYS)
    assert {e.play for e in data["eval"]} == set(EVAL_PLAYS)
    train_prompts = {e.prompt for e in data["train"]}
    assert not any(e.prompt in train_prompts for e in data["eval"])


def test_preference_pairs_reject_a_wrong_answer():
    # the fake plays repeat one text, so "continue" has no distinct wrong line to offer
    data = build_instructions(5, docs=fake_docs(), tasks=["speaker", "genre", "play"])
    pairs = preference_pairs(data["train"] + data["eval"])
    assert pairs and all(p.chosen != p.rejected for p in pairs)
    speaker = [p for p in pairs if p.task == "speaker"]
    hard = [p for p in speaker if p.rejected in p.prompt]
    assert len(hard) >= len(speaker) // 2, "the negative is usually the other speaker"


def test_speaker_shortcut_reads_the_first_speaker():
    prompt = "Who speaks the last line?\nA: x\nB: y\n?: z"
    assert speaker_shortcut(prompt) == "A"
    with pytest.raises(ValueError):
        speaker_shortcut("no")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ["poetry"]}, "unknown task"),
        ({"eval_plays": ["Cats"]}, "not known plays"),
        ({"per_play": 0}, "positive"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_instructions(docs=fake_docs(), **kwargs)
