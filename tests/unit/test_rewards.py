"""The lesson-14 rewards: syllables by the CMU dictionary, the hack the naive count allows and
the rule that closes it, and the prompts split by play."""

from __future__ import annotations

import pytest

from minillm.data import Document
from minillm.finetune import rewards
from minillm.finetune.rewards import (
    completion_line,
    dictionary_syllables,
    naive_syllable_reward,
    syllable_score,
    verse_prompts,
    verse_reward,
)

PENTAMETER = "Shall I compare thee to a summer's day?\n"  # ten syllables


@pytest.mark.parametrize(
    ("word", "count"),
    [("compare", 2), ("summer's", 2), ("tomorrow", 3), ("the", 1), ("kill'd", 1),
     ("know'st", 1), ("'tis", 1), ("hath", 1), ("qzxv", None)],
)  # fmt: skip
def test_dictionary_syllables(word, count):
    assert dictionary_syllables(word) == count


def test_a_ten_syllable_line_scores_one_and_near_misses_score_less():
    assert verse_reward(PENTAMETER) == 1.0
    assert verse_reward("Shall I compare thee to a day?\n") == pytest.approx(syllable_score(8))
    assert syllable_score(8) == pytest.approx(0.6) and syllable_score(15) == 0.0
    assert syllable_score(10) == 1.0 and syllable_score(12) == pytest.approx(0.6)


def test_only_the_first_finished_line_counts():
    assert completion_line("a b\nc d") == "a b"
    assert completion_line("no newline") is None
    assert verse_reward(PENTAMETER.rstrip("\n")) == 0.0  # never ended its line
    assert verse_reward(PENTAMETER + "and then more words that do not count\n") == 1.0


@pytest.mark.parametrize(
    "hack",
    [
        "the the the the the the the the the the\n",  # one short word, repeated
        "O O O O O O O O O O\n",
        "Blorp quaxi zimbe fluor xyz\n",  # made-up words with the right vowel groups
    ],
)
def test_the_naive_reward_is_hacked_and_the_verse_reward_closes_it(hack):
    assert naive_syllable_reward(hack) >= 0.6
    assert verse_reward(hack) == 0.0


def test_the_repetition_rule_spares_ordinary_repeats():
    line = "To be, or not to be: that is the question:\n"  # "to", "be" twice each
    assert verse_reward(line) > 0
    assert verse_reward(line) == naive_syllable_reward(line)


def test_brute_force_sum_of_the_dictionary(monkeypatch):
    # With a toy dictionary the reward is the graded score of the summed counts.
    toy = {"la": ["L AA1"], "tralala": ["T R AA0 L AA0 L AA1"], "bo": ["B OW1"]}
    monkeypatch.setattr(rewards, "_dictionary", lambda: lambda w: toy.get(w, []))
    rewards.dictionary_syllables.cache_clear()
    try:
        text = "tralala la bo tralala\n"  # 3 + 1 + 1 + 3 = 8 syllables
        assert verse_reward(text) == pytest.approx(syllable_score(8))
        assert verse_reward("tralala tralala tralala bo\n") == 0.0  # one word, 3 of 4
    finally:
        rewards.dictionary_syllables.cache_clear()


def test_prompts_are_split_by_play_and_end_in_a_newline():
    text = "\n\n".join(f"HAMLET.\nLine one {i}\nLine two {i}\nLine three {i}" for i in range(5))
    docs = [Document(name=t, text=text, title=t) for t in ("Hamlet", "Macbeth", "The Tempest")]
    out = verse_prompts(docs, per_play=3, seed=1)
    assert len(out["train"]) == 6 and len(out["eval"]) == 3  # Macbeth is an evaluation play
    assert all(p.startswith("HAMLET.\nLine one") and p.endswith("\n") for p in out["eval"])
    assert all(p.count("\n") == 3 for p in out["train"])
    assert verse_prompts(docs, per_play=3, seed=1) == out
    with pytest.raises(ValueError, match="per_play"):
        verse_prompts(docs, per_play=0)
