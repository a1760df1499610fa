"""The GPT (lesson 04): embeddings, a stack of blocks, the output head, the loss, parameter and
FLOP counts, sampling, and Hugging Face interop.

:meth:`GPT.from_hf` / :meth:`GPT.to_hf` convert weights to and from ``transformers``'
``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` (GPT-2's blocks with RoPE) and ``LlamaForCausalLM``
(code in :mod:`minillm.model.hf_convert`); :meth:`GPT.generate` samples with the KV cache
(:mod:`minillm.model.sampling`; lesson 11's :func:`minillm.serve.generate` adds top-p, min-p,
penalties, stop strings and streaming).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import minillm.model.hf_convert as hf_convert
import minillm.model.sampling as sampling
from minillm.model.config import GPTConfig
from minillm.model.layers import Block, KVCache, _make_norm, rope_cos_sin

__all__ = ["GPT"]


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
        *,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue each sequence of ``idx`` by ``max_new_tokens`` sampled tokens, with a KV cache.

        Temperature 0 is greedy; see :func:`minillm.model.sampling.sample`. Lesson 11's
        :func:`minillm.serve.generate` adds top-p, min-p, penalties, stop strings and streaming.

        Returns:
            The prompt followed by the new tokens, (batch, time + max_new_tokens).
        """
        return sampling.sample(
            self, idx, max_new_tokens, temperature, top_k, generator, use_cache=use_cache
        )

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

    # ---- Hugging Face interop (the code lives in minillm.model.hf_convert) ----------------------

    @classmethod
    def from_hf(cls, source: Any, config: Any = None) -> GPT:
        """A GPT with the weights of a ``transformers`` GPT-2, GPT-NeoX or Llama model.

        See :func:`minillm.model.hf_convert.from_hf` (``source``: a model or its state dict; ``config``:
        needed with a state dict).
        """
        return hf_convert.from_hf(source, config, cls=cls)

    def to_hf(self, **config_overrides: Any) -> nn.Module:
        """This model as a ``transformers`` GPT-2, GPT-NeoX or Llama model.

        See :func:`minillm.model.hf_convert.to_hf`; ``config_overrides`` go to the ``transformers`` config.
        """
        return hf_convert.to_hf(self, **config_overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> GPT:
        """Load a GPT-2, GPT-NeoX or Llama model saved by ``transformers``, or from the hub.

        See :func:`minillm.model.hf_convert.from_pretrained` (a local folder never touches the network).
        """
        return hf_convert.from_pretrained(name_or_path, cls=cls)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
