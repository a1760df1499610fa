"""Lesson 13 (interpretability): attention capture, the logit lens, attribution, activation
patching and probes.

Modules: ``attention``, ``attribution``, ``hooks``, ``lens``, ``patching``, ``probes``.
"""

from minillm.interpret.attention import (
    HEAD_SCORES,
    ablate_heads,
    attention_maps,
    attention_rollout,
    head_scores,
)
from minillm.interpret.attribution import (
    IGResult,
    gradient_x_input,
    integrated_gradients,
    logprob_from_embeddings,
    target_logprob,
)
from minillm.interpret.hooks import (
    bits_per_byte,
)
from minillm.interpret.lens import (
    lens_scores,
    logit_lens,
    residual_stream,
)
from minillm.interpret.patching import (
    patch_residual,
    patching_sweep,
)
from minillm.interpret.probes import (
    ProbeResult,
    probe_layers,
)

__all__ = [
    "HEAD_SCORES",
    "IGResult",
    "ProbeResult",
    "ablate_heads",
    "attention_maps",
    "attention_rollout",
    "bits_per_byte",
    "gradient_x_input",
    "head_scores",
    "integrated_gradients",
    "lens_scores",
    "logit_lens",
    "logprob_from_embeddings",
    "patch_residual",
    "patching_sweep",
    "probe_layers",
    "residual_stream",
    "target_logprob",
]
