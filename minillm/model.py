"""The GPT: configuration, attention, blocks, the model, a KV cache and Hugging Face interop.

Taught in lesson 03 (attention: :class:`CausalSelfAttention`) and lesson 04 (the GPT model:
embeddings, norms, MLPs, blocks, :class:`GPT`). One class covers GPT-2 and a Llama-style model:
the switches in :class:`GPTConfig` (``pos_emb``, ``norm``, ``mlp``, ``n_kv_head``, ``bias``)
turn one into the other, and :meth:`GPT.from_hf` / :meth:`GPT.to_hf` convert weights to and from
``transformers``' ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` (GPT-2's blocks with RoPE) and
``LlamaForCausalLM`` (code in :mod:`minillm.hub`).

Module names follow nanoGPT and Hugging Face's GPT-2 (``transformer.h.0.attn.c_attn`` ...), so a
GPT-2 checkpoint maps onto this model with only transposes.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PRESETS",
    "GPTConfig",
    "GPT",
    "Block",
    "CausalSelfAttention",
    "MLP",
    "RMSNorm",
    "KVCache",
    "rope_cos_sin",
    "apply_rope",
]

_CHOICES: dict[str, tuple[str, ...]] = {
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "swiglu"),
    "pos_emb": ("learned", "rope"),
    "attn": ("sdpa", "plain"),
}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019), as in Llama.

    ``y = x / sqrt(mean(x²) + eps) · weight``: LayerNorm without the mean subtraction and the bias.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 (as Llama does) so that bf16/fp16 inputs do not lose precision.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def _make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rope_cos_sin(
    head_dim: int, length: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of rotary position embeddings (Su et al., 2021), shape (length, head_dim).

    Pair ``i`` of a head (dimensions ``i`` and ``i + head_dim/2``, the "rotate half" layout of
    Hugging Face's Llama) turns by angle ``position · theta^(-2i/head_dim)``.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (length, hd/2)
    angles = torch.cat((angles, angles), dim=-1)  # (length, hd)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` (B, heads, T, head_dim) by the angles in ``cos``/``sin`` (T, hd)."""
    half = x.shape[-1] // 2
    rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated_half * sin


class KVCache:
    """Keys and values of every layer for the tokens seen so far, for incremental decoding.

    Memory is allocated once for ``max_len`` positions; each forward pass writes its new keys and
    values after the ``length`` already stored, so a decoding step costs O(length) instead of the
    O(length²) of recomputing the whole prefix.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        max_len = config.block_size if max_len is None else max_len
        if not 0 < max_len <= config.block_size:
            raise ValueError(
                f"KVCache max_len must be in 1..block_size ({config.block_size}), got {max_len}"
            )
        shape = (config.n_layer, batch_size, config.num_kv_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def reset(self) -> None:
        """Forget every stored position (the memory is kept for reuse)."""
        self.length = 0

    def store(
        self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``, ``v`` (B, kv_heads, T, hd) at positions ``start..start+T``; return all so far."""
        end = start + k.shape[2]
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with optional grouped-query heads, RoPE and a KV cache.

    One fused projection ``c_attn`` makes the queries (n_head heads) and the keys and values
    (n_kv_head heads each), laid out as [q | k | v]; ``c_proj`` mixes the heads back together.
    """

    # A hook on the attention probabilities (B, n_head, T, S) of the explicit ("plain") path:
    # when set, it is called with them and returns the tensor to use (the same one to only
    # record them). minillm.interpret sets it for a pass to read them (lesson 13); None otherwise.
    probs_hook: Any = None

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.num_kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.use_sdpa = config.attn == "sdpa"
        qkv_width = (config.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, qkv_width, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """Attend over the sequence ``x`` (B, T, n_embd) and, with a cache, over earlier tokens.

        Args:
            x: the normalised residual stream of the new tokens.
            rope: cos and sin for the positions of the new tokens, each (T, head_dim), or None.
            cache: keys and values of earlier tokens; the new ones are appended to it.
            layer: index of this block in the cache.
        """
        B, T, _ = x.shape
        q_width, kv_width = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([q_width, kv_width, kv_width], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.store(layer, start, k, v)  # (B, nkv, start+T, hd)
        y = self._sdpa(q, k, v, start) if self.use_sdpa else self._plain(q, k, v, start)
        y = y.transpose(1, 2).contiguous().view(B, T, q_width)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
        T, S = q.shape[2], k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        gqa = self.n_kv_head != self.n_head
        if start == 0:  # no earlier tokens: the ordinary causal mask
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa
            )
        # New tokens sit at positions start..S-1 and may see every key up to their own position.
        mask = None if T == 1 else _causal_mask(T, S, q.device)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa
        )

    def _plain(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
        """softmax(q kᵀ / √d + mask) v, written out (lesson 03)."""
        if self.n_kv_head != self.n_head:  # each key/value head serves a group of query heads
            repeats = self.n_head // self.n_kv_head
            k = k.repeat_interleave(repeats, dim=1)
            v = v.repeat_interleave(repeats, dim=1)
        T, S = q.shape[2], k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, S)
        scores = scores.masked_fill(~_causal_mask(T, S, q.device), float("-inf"))
        weights = F.softmax(scores, dim=-1)
        if self.probs_hook is not None:
            weights = self.probs_hook(weights)
        weights = self.attn_dropout(weights)
        return weights @ v  # (B, nh, T, hd)


def _causal_mask(T: int, S: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, S) mask: query i (at position S-T+i) may attend to keys 0..S-T+i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


class MLP(nn.Module):
    """The position-wise feed-forward network: GELU (GPT-2) or SwiGLU (Llama).

    For SwiGLU, ``c_fc`` holds the gate and the up projection side by side ([gate | up]).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        hidden = config.ffn_dim
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.swiglu else hidden, config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")  # GPT-2's GELU
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = _make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope=rope, cache=cache, layer=layer)
        return x + self.mlp(self.ln_2(x))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-2 and Llama style).

    ``model(idx)`` returns ``(logits, None)``; ``model(idx, targets)`` returns
    ``(logits, loss)`` with the mean cross-entropy over targets ≥ 0 (negative targets, such as
    nanoGPT's -1 or Hugging Face's -100, are ignored).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        modules: dict[str, nn.Module] = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.pos_emb == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules["drop"] = nn.Dropout(config.dropout)
        modules["h"] = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        modules["ln_f"] = _make_norm(config)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        if config.pos_emb == "rope":
            cos, sin = rope_cos_sin(config.head_dim, config.block_size, config.rope_theta)
            # Not saved in the state dict: they are a function of the config.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: each block adds two residual branches, so the stream's variance would grow with
        # depth; scaling the branches' output projections by 1/sqrt(2·n_layer) keeps it steady.
        residual_std = config.init_std / math.sqrt(2 * config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=residual_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    # ---- forward ------------------------------------------------------------------------------

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position of ``idx``, and the loss when ``targets`` are given.

        Args:
            idx: token ids, int tensor of shape (batch, time).
            targets: the next token at every position, same shape as ``idx``; negative values
                are ignored by the loss.
            kv_cache: a :class:`KVCache` (from :meth:`new_kv_cache`); ``idx`` then continues the
                tokens already in the cache, whose keys and values are reused, and the new ones
                are stored.

        Returns:
            ``(logits, loss)``: logits (batch, time, vocab_size); loss a scalar or None.

        Raises:
            ValueError: wrong shape, a sequence longer than the context, or an id outside the
                vocabulary.
        """
        B, T = self._check_ids(idx)
        start = 0
        if kv_cache is not None:
            start = kv_cache.length
            if kv_cache.batch_size != B:
                raise ValueError(f"KV cache holds batch size {kv_cache.batch_size}, input has {B}")
            if start + T > kv_cache.max_len:
                raise ValueError(
                    f"the KV cache holds {start} tokens; {T} more make {start + T}, longer than "
                    f"its capacity {kv_cache.max_len} (block_size={self.config.block_size})"
                )
        hidden = self._hidden(idx, start, kv_cache)
        logits = self.lm_head(hidden)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = self._loss(logits, targets)
        return logits, loss

    def _hidden(self, idx: torch.Tensor, start: int, kv_cache: KVCache | None) -> torch.Tensor:
        """The final-normed hidden states (B, T, n_embd) of checked ids at positions start.."""
        T = idx.shape[1]
        x = self.transformer.wte(idx)  # (B, T, n_embd)
        rope = None
        if self.config.pos_emb == "learned":
            positions = torch.arange(start, start + T, device=idx.device)
            x = x + self.transformer.wpe(positions)
        else:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, rope=rope, cache=kv_cache, layer=layer)
        if kv_cache is not None:
            kv_cache.length = start + T
        return self.transformer.ln_f(x)

    def _next_logits(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, vocab) of the last position only, for ids already known to be valid."""
        return self.lm_head(self._hidden(idx, cache.length, cache)[:, -1])

    def _check_ids(self, idx: torch.Tensor) -> tuple[int, int]:
        if (
            not isinstance(idx, torch.Tensor)
            or idx.dtype.is_floating_point
            or idx.dtype == torch.bool
        ):
            raise TypeError(f"idx must be an integer tensor of token ids, got {_describe(idx)}")
        if idx.dim() != 2:
            raise ValueError(
                f"idx must have shape (batch, time), got {tuple(idx.shape)}; "
                "use idx[None] for a single sequence"
            )
        batch, length = idx.shape
        if length == 0:
            raise ValueError("idx is empty: need at least one token per sequence")
        if length > self.config.block_size:
            raise ValueError(
                f"sequence length {length} is longer than the model's context length "
                f"block_size={self.config.block_size}"
            )
        if torch.compiler.is_compiling():
            # Reading the ids' values (int(idx.min())) would break the torch.compile graph
            # (fullgraph=True fails on it), so traced code skips this one check: eager calls
            # keep the clear error, and minillm.train checks its data's ids once when compiling.
            return batch, length
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token id {bad} is outside the vocabulary: ids must be in 0..{self.config.vocab_size - 1} "
                f"(vocab_size={self.config.vocab_size})"
            )
        return batch, length

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape != logits.shape[:2]:
            raise ValueError(
                f"targets must have the shape of idx {tuple(logits.shape[:2])}, "
                f"got {tuple(targets.shape)}"
            )
        targets = targets.masked_fill(targets < 0, -100)
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100
        )

    # ---- counting -----------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (tied weights counted once).

        Args:
            non_embedding: leave out the token and position embedding tables (an untied output
                projection is still counted: it is a matrix multiply, not a lookup). This is the
                N of the scaling-law papers.
        """
        total = sum(p.numel() for p in self.parameters())  # parameters() yields each tensor once
        if non_embedding:
            total -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                total -= self.transformer.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token, the figure MFU is measured against.

        ``6·N_matmul + 12·n_layer·n_embd·seq_len``, where N_matmul counts the weights of every
        matrix multiply (all linear layers, the output projection included; not embedding
        lookups, norms or biases). A weight costs 2 FLOPs per token forward (a multiply and an
        add) and 4 backward (gradients for the input and for the weight), hence 6. Attention
        adds, per layer, QKᵀ and the weighted sum of V: 2·2·n_embd·seq_len forward, times 3 with
        the backward pass (PaLM, Chowdhery et al. 2022, appendix B; the causal mask's saving is not
        counted, as there). The forward pass alone is a third of this.

        Args:
            seq_len: the context length the model is run at; defaults to ``block_size``.
        """
        seq_len = self.config.block_size if seq_len is None else seq_len
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * n_matmul + 12 * self.config.n_layer * self.config.n_embd * seq_len

    # ---- generation ---------------------------------------------------------------------------

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` on this model's device and dtype."""
        weight = self.transformer.wte.weight
        return KVCache(self.config, batch_size, max_len, device=weight.device, dtype=weight.dtype)

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        **sampling: Any,
    ) -> torch.Tensor:
        """Continue each sequence of ``idx`` by ``max_new_tokens`` sampled tokens, with a KV cache.

        A thin wrapper around :func:`minillm.generate.generate` (lesson 11), which documents the
        arguments; ``sampling`` takes its keyword-only ones (``top_p``, ``min_p``,
        ``repetition_penalty``, ``use_cache``). Temperature 0 is greedy.

        Returns:
            The prompt followed by the new tokens, (batch, time + max_new_tokens).
        """
        from minillm.generate import generate

        return generate(self, idx, max_new_tokens, temperature, top_k, generator, **sampling)

    # ---- weights ------------------------------------------------------------------------------

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a state dict after checking every key and shape, listing all problems at once.

        With tied weights ``lm_head.weight`` may be absent (it is ``transformer.wte.weight``).

        Raises:
            ValueError: missing keys, unexpected keys or wrong shapes (all of them listed).
        """
        expected = self.state_dict()
        optional = {"lm_head.weight"} if self.config.tie_weights else set()
        missing = sorted(set(expected) - set(state_dict) - optional)
        unexpected = sorted(set(state_dict) - set(expected))
        wrong_shapes = [
            f"{key}: expected {tuple(expected[key].shape)}, got {tuple(state_dict[key].shape)}"
            for key in expected
            if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
        ]
        problems = []
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if wrong_shapes:
            problems.append(f"wrong shapes: {wrong_shapes}")
        if problems:
            raise ValueError("state dict does not fit this GPT: " + "; ".join(problems))
        if self.config.tie_weights and "lm_head.weight" in state_dict:
            state_dict = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
        with torch.no_grad():
            for key, value in state_dict.items():
                expected[key].copy_(value)

    # ---- Hugging Face interop (the code lives in minillm.hub, lesson 12) ----------------------

    @classmethod
    def from_hf(cls, source: Any, config: Any = None) -> GPT:
        """A GPT with the weights of a ``transformers`` GPT-2, GPT-NeoX or Llama model.

        See :func:`minillm.hub.from_hf` (``source``: a model or its state dict; ``config``:
        needed with a state dict).
        """
        from minillm.hub import from_hf

        return from_hf(source, config, cls=cls)

    def to_hf(self, **config_overrides: Any) -> nn.Module:
        """This model as a ``transformers`` GPT-2, GPT-NeoX or Llama model.

        See :func:`minillm.hub.to_hf`; ``config_overrides`` go to the ``transformers`` config.
        """
        from minillm.hub import to_hf

        return to_hf(self, **config_overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> GPT:
        """Load a GPT-2, GPT-NeoX or Llama model saved by ``transformers``, or from the hub.

        See :func:`minillm.hub.from_pretrained` (a local folder never touches the network).
        """
        from minillm.hub import from_pretrained

        return from_pretrained(name_or_path, cls=cls)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
