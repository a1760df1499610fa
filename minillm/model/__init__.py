"""Lessons 03 (attention) and 04 (the GPT model): the configuration, attention with a KV cache, the
blocks, the GPT itself, sampling, and the Hugging Face weight layouts.

Modules: ``config``, ``diagrams``, ``gpt``, ``hf_convert``, ``hf_layouts``, ``layers``, ``sampling``.
"""

from minillm.model.config import (
    PRESETS,
    GPTConfig,
)
from minillm.model.diagrams import (
    BLUE,
    FONT,
    GREEN,
    GREY,
    ORANGE,
    PURPLE,
    attention_diagram,
    block_diagram,
    multihead_reshape_diagram,
)
from minillm.model.gpt import (
    GPT,
)
from minillm.model.hf_convert import (
    from_hf,
    from_pretrained,
    hf_layout_of,
    hf_state_dict,
    to_hf,
)
from minillm.model.hf_layouts import (
    module_name_from_gpt_neox,
    module_name_to_gpt_neox,
    qkv_rows,
)
from minillm.model.layers import (
    MLP,
    Block,
    CausalSelfAttention,
    KVCache,
    RMSNorm,
    apply_rope,
    rope_cos_sin,
)
from minillm.model.sampling import (
    Steps,
    cached_steps,
    check_sampling_args,
    recomputed_steps,
    sample,
)

__all__ = [
    "BLUE",
    "Block",
    "CausalSelfAttention",
    "FONT",
    "GPT",
    "GPTConfig",
    "GREEN",
    "GREY",
    "KVCache",
    "MLP",
    "ORANGE",
    "PRESETS",
    "PURPLE",
    "RMSNorm",
    "Steps",
    "apply_rope",
    "attention_diagram",
    "block_diagram",
    "cached_steps",
    "check_sampling_args",
    "from_hf",
    "from_pretrained",
    "hf_layout_of",
    "hf_state_dict",
    "module_name_from_gpt_neox",
    "module_name_to_gpt_neox",
    "multihead_reshape_diagram",
    "qkv_rows",
    "recomputed_steps",
    "rope_cos_sin",
    "sample",
    "to_hf",
]
