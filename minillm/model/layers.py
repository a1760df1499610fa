"""The GPT's building blocks (lessons 03 and 04): norms, rotary positions, the KV cache,
causal self-attention, the MLP and the residual block.

Module names follow nanoGPT and Hugging Face's GPT-2 (``attn.c_attn``, ``mlp.c_fc`` ...), so a
GPT-2 checkpoint maps onto these layers with only transposes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.model.config import GPTConfig


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
