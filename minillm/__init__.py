"""minillm: a small GPT-style language model, built end to end.

Each subpackage is one stage of the lifecycle (``minillm.data`` for lesson 01 up to
``minillm.interpret`` for lesson 13) and says in its docstring which lesson teaches it.
Submodules are imported on first use, so ``import minillm`` is fast and needs only the
runtime dependencies; ``minillm.GPT`` and friends resolve lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from minillm.utils.environment import auto_device, doctor, seed_everything

__version__ = "0.1.0"

# public name -> the stage package that exports it (imported when first accessed)
_LAZY: dict[str, str] = {
    "BPETokenizer": "minillm.tokenizer",
    "GPT": "minillm.model",
    "GPTConfig": "minillm.model",
    "TrainConfig": "minillm.train",
    "train": "minillm.train",
    "course_model": "minillm.course",
    "load_corpus": "minillm.data",
    "prepare_corpus": "minillm.data",
    "UnigramModel": "minillm.train",
    "BigramModel": "minillm.train",
    "baseline_report": "minillm.train",
    "LoRALinear": "minillm.finetune",
    "apply_lora": "minillm.finetune",
    "merge_lora": "minillm.finetune",
    "SamplingParams": "minillm.serve",
    "generate_batch": "minillm.serve",
    "ContinuousBatcher": "minillm.serve",
    "create_app": "minillm.serve",
    "QuantLinear": "minillm.quantize",
    "quantize_model": "minillm.quantize",
    "model_size_bytes": "minillm.quantize",
}

__all__ = ["__version__", "auto_device", "doctor", "seed_everything", *_LAZY]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'minillm' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    return getattr(module, name)
