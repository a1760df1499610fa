"""The GPT's configuration (lessons 03 and 04): sizes, switches and named presets.

One configuration covers GPT-2 and a Llama-style model: the switches (``pos_emb``, ``norm``,
``mlp``, ``n_kv_head``, ``bias``) turn one into the other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

_CHOICES: dict[str, tuple[str, ...]] = {
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "swiglu"),
    "pos_emb": ("learned", "rope"),
    "attn": ("sdpa", "plain"),
}

# Named model shapes. "course" is the running example of the course (helper TRAIN, issue 5, owns
# its sizes): small enough to train in minutes on a laptop CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "course": dict(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=128),
    # GPT-2 small (124M): the shapes of Radford et al. (2019) and Hugging Face's "gpt2".
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(vocab_size=50257, block_size=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600),
}
# The course shape with Llama's choices: RoPE, RMSNorm, SwiGLU, grouped-query attention (half as
# many key/value heads) and no biases. Small Llamas (Llama 3.2 1B/3B) tie the input and output
# embeddings; so does this. It follows the "course" sizes, so the two can be compared directly.
PRESETS["llama-small"] = dict(
    PRESETS["course"],
    n_kv_head=max(1, PRESETS["course"]["n_head"] // 2),
    bias=False,
    norm="rmsnorm",
    mlp="swiglu",
    pos_emb="rope",
    tie_weights=True,
)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")


@dataclass
class GPTConfig:
    """The shape and the architectural switches of a :class:`GPT`.

    Attributes:
        vocab_size: number of token ids.
        block_size: context length, the longest sequence the model reads.
        n_layer: number of transformer blocks.
        n_head: number of query heads.
        n_embd: width of the residual stream; must be divisible by ``n_head``.
        n_kv_head: number of key/value heads (grouped-query attention); ``None`` means
            ``n_head`` (ordinary multi-head attention), 1 is multi-query attention.
        dropout: dropout probability on embeddings, attention weights and residual branches.
        bias: biases in the linear layers and LayerNorms (GPT-2: True, Llama: False).
        norm: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (Llama).
        mlp: ``"gelu"`` (GPT-2, tanh-approximated GELU) or ``"swiglu"`` (Llama).
        pos_emb: ``"learned"`` absolute position embeddings (GPT-2) or ``"rope"`` (Llama).
        tie_weights: share the token embedding with the output projection.
        attn: ``"sdpa"`` (``F.scaled_dot_product_attention``, fast) or ``"plain"`` (the
            explicit softmax(QKᵀ/√d)V of lesson 03); they compute the same thing.
        ffn_hidden: hidden width of the MLP; ``None`` means 4·n_embd for GELU and about
            8/3·n_embd (rounded up to a multiple of 32) for SwiGLU, which keeps the parameter
            count close to GELU's.
        norm_eps: epsilon of the normalisation layers.
        rope_theta: base of the RoPE frequencies.
        init_std: standard deviation of the GPT-2 weight initialisation.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_kv_head: int | None = None
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"
    mlp: str = "gelu"
    pos_emb: str = "learned"
    tie_weights: bool = True
    attn: str = "sdpa"
    ffn_hidden: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _check_positive_int(name, getattr(self, name))
        for name in ("n_kv_head", "ffn_hidden"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by GPTConfig.n_head "
                f"({self.n_head})"
            )
        if self.n_head % self.num_kv_heads:
            raise ValueError(
                f"GPTConfig.n_head ({self.n_head}) must be divisible by GPTConfig.n_kv_head "
                f"({self.n_kv_head})"
            )
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head size; n_embd / n_head = {self.head_dim} "
                f"(GPTConfig.n_embd={self.n_embd}, GPTConfig.n_head={self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("norm_eps", "rope_theta", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive number, got {value!r}")

    @property
    def head_dim(self) -> int:
        """Size of one attention head: ``n_embd // n_head``."""
        return self.n_embd // self.n_head

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads actually used (``n_kv_head``, or ``n_head`` when that is None)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def ffn_dim(self) -> int:
        """Hidden width of the MLP (``ffn_hidden`` or the default for the chosen MLP)."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return 32 * math.ceil(8 * self.n_embd / 3 / 32)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named configuration from :data:`PRESETS`, with any field overridden.

        Example: ``GPTConfig.preset("course", n_layer=2, attn="plain")``.

        Raises:
            ValueError: unknown preset name, or an override that is not a config field.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """Build a config from a dict (e.g. one saved in a checkpoint), rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown GPTConfig field(s) {unknown}; allowed fields: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serialisable), the inverse of :meth:`from_dict`."""
        return asdict(self)
