"""Lesson 12 (release): Hugging Face conversion and export, ONNX, the model card.

Modules: ``hub``, ``modelcard``.
"""

from minillm.release.hub import (
    EXPORT_FILES,
    UploadItem,
    export_hf,
    export_onnx,
    from_hf,
    from_pretrained,
    push_to_hub,
)
from minillm.release.modelcard import (
    EVAL_SOURCE,
    MODEL_SOURCE,
    RECIPE_BENCH,
    REPO_ROOT,
    REPOSITORY,
    SHIPPED_CARD,
    CardFacts,
    Figure,
    build_card,
    card_figures,
    check_card,
    course_facts,
    facts_from_model,
    lookup,
    show,
)

__all__ = [
    "CardFacts",
    "EVAL_SOURCE",
    "EXPORT_FILES",
    "Figure",
    "MODEL_SOURCE",
    "RECIPE_BENCH",
    "REPOSITORY",
    "REPO_ROOT",
    "SHIPPED_CARD",
    "UploadItem",
    "build_card",
    "card_figures",
    "check_card",
    "course_facts",
    "export_hf",
    "export_onnx",
    "facts_from_model",
    "from_hf",
    "from_pretrained",
    "lookup",
    "push_to_hub",
    "show",
]
