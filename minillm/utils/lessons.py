"""The course's lessons, as the package knows them: number, title, stage package, status.

Lesson 00's lifecycle map draws from this list, so it is right wherever the notebook is opened
(alone in Colab, from an installed wheel), not only next to the other notebooks.
``tests/unit/test_lessons_index.py`` checks it against ``notebooks/``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["Lesson", "lessons"]


class Lesson(NamedTuple):
    """One lesson: ``number`` ("00"), ``title``, the stage ``package`` its code lives in, ``status``."""

    number: str
    title: str
    package: str | None
    status: Literal["written", "planned"]


_LESSONS: tuple[Lesson, ...] = (
    Lesson("00", "Welcome and setup", "minillm.utils", "written"),
    Lesson("01", "Data: collecting, cleaning and packing a corpus", "minillm.data", "written"),
    Lesson("02", "Tokenization: bytes, BPE and GPT-2", "minillm.tokenizer", "written"),
    Lesson("03", "Attention", "minillm.model", "written"),
    Lesson("04", "The GPT model", "minillm.model", "written"),
    Lesson("05", "Pretraining", "minillm.train", "written"),
    Lesson("06", "Distributed training", "minillm.train", "written"),
    Lesson("07", "Mixed precision", "minillm.train", "written"),
    Lesson(
        "08",
        "Fine-tuning: full, LoRA, instruction tuning, a classifier, DPO",
        "minillm.finetune",
        "written",
    ),
    Lesson("09", "Evaluation", "minillm.evaluate", "written"),
    Lesson("10", "Quantization from scratch", "minillm.quantize", "written"),
    Lesson("11", "Inference and serving", "minillm.serve", "written"),
    Lesson(
        "12",
        "Release: files others can load, a card that tells the truth",
        "minillm.release",
        "written",
    ),
    Lesson(
        "13",
        "Looking inside the model: attention, the logit lens, attribution, patching, probes",
        "minillm.interpret",
        "written",
    ),
    Lesson(
        "14",
        "Reinforcement learning from verifiable rewards (GRPO)",
        "minillm.finetune",
        "written",
    ),
)


def lessons(status: str | None = None) -> list[Lesson]:
    """Every lesson in order, or only those whose ``status`` is ``"written"`` or ``"planned"``.

    Raises:
        ValueError: ``status`` is neither None, ``"written"`` nor ``"planned"``.
    """
    if status not in (None, "written", "planned"):
        raise ValueError(f"status must be None, 'written' or 'planned', got {status!r}")
    return [lesson for lesson in _LESSONS if status is None or lesson.status == status]
