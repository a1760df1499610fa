"""Weight and configuration layouts of ``transformers``' GPT-2 and Llama (lesson 12).

Used by :mod:`minillm.hub`: a GPT-2 or Llama config to a :class:`minillm.model.GPTConfig` and
back, and state dicts renamed, split and transposed in both directions, every key accounted for
(missing and unexpected keys are listed in one error).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minillm.model import GPTConfig


def _config_from_hf(hf_config: Any, layout: str) -> GPTConfig:
    if layout == "gpt2":
        return _config_from_gpt2(hf_config)
    return _config_from_llama(hf_config)


def _config_from_gpt2(c: Any) -> GPTConfig:
    unsupported = []
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        unsupported.append(f"activation_function={c.activation_function!r} (need 'gelu_new')")
    if not getattr(c, "scale_attn_weights", True):
        unsupported.append("scale_attn_weights=False")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx=True")
    if getattr(c, "add_cross_attention", False):
        unsupported.append("add_cross_attention=True")
    if unsupported:
        raise ValueError(f"GPT-2 options not supported by minillm: {', '.join(unsupported)}")
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=0.0,
        bias=True,
        ffn_hidden=c.n_inner if c.n_inner is not None else None,
        norm_eps=c.layer_norm_epsilon,
        tie_weights=bool(getattr(c, "tie_word_embeddings", True)),
    )


def _config_from_llama(c: Any) -> GPTConfig:
    unsupported = []
    if c.hidden_act != "silu":
        unsupported.append(f"hidden_act={c.hidden_act!r} (need 'silu')")
    rope = dict(getattr(c, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        unsupported.append(f"rope_type={rope.get('rope_type')!r} (need 'default')")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if head_dim * c.num_attention_heads != c.hidden_size:
        unsupported.append(f"head_dim={head_dim} (need hidden_size / num_attention_heads)")
    if bool(c.attention_bias) != bool(getattr(c, "mlp_bias", False)):
        unsupported.append("attention_bias != mlp_bias (minillm has one bias switch)")
    if unsupported:
        raise ValueError(f"Llama options not supported by minillm: {', '.join(unsupported)}")
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_kv_head=c.num_key_value_heads,
        n_embd=c.hidden_size,
        dropout=0.0,
        bias=bool(c.attention_bias),
        norm="rmsnorm",
        mlp="swiglu",
        pos_emb="rope",
        tie_weights=bool(getattr(c, "tie_word_embeddings", False)),
        ffn_hidden=c.intermediate_size,
        norm_eps=c.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))),
    )


def _gpt2_config_kwargs(config: GPTConfig) -> dict[str, Any]:
    special = {} if config.vocab_size > 50256 else {"bos_token_id": None, "eos_token_id": None}
    return dict(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.ffn_dim,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=config.norm_eps,
        tie_word_embeddings=config.tie_weights,
        **special,
    )


def _llama_config_kwargs(config: GPTConfig) -> dict[str, Any]:
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_weights,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        attention_bias=config.bias,
        mlp_bias=config.bias,
        attention_dropout=config.dropout,
        bos_token_id=None,
        eos_token_id=None,
    )


class _Take:
    """Reads keys out of a source state dict and remembers which were missing or left over."""

    def __init__(self, source: dict[str, torch.Tensor], ignore_suffixes: tuple[str, ...]) -> None:
        self.source = source
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.ignore_suffixes = ignore_suffixes

    def __call__(self, key: str) -> torch.Tensor | None:
        if key not in self.source:
            self.missing.append(key)
            return None
        self.used.add(key)
        return self.source[key]

    def check(self, what: str) -> None:
        unexpected = sorted(
            k for k in set(self.source) - self.used if not k.endswith(self.ignore_suffixes)
        )
        problems = []
        if self.missing:
            problems.append(f"missing keys: {sorted(self.missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if problems:
            raise ValueError(f"{what} state dict does not fit: " + "; ".join(problems))


def _gpt2_to_minillm(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 keys are ours already; its Conv1D weights are stored (in, out)."""
    take = _Take(sd, ignore_suffixes=(".attn.bias", ".attn.masked_bias"))
    out: dict[str, torch.Tensor] = {}
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    for i in range(config.n_layer):
        prefix = f"transformer.h.{i}."
        names += [prefix + f"{ln}.{p}" for ln in ("ln_1", "ln_2") for p in ("weight", "bias")]
        for linear in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = take(prefix + linear + ".weight")
            if weight is not None:
                out[prefix + linear + ".weight"] = weight.t()
            names.append(prefix + linear + ".bias")
    for name in names:
        value = take(name)
        if value is not None:
            out[name] = value
    if config.tie_weights:
        sd_head = sd.get("lm_head.weight")
        if sd_head is not None:
            take.used.add("lm_head.weight")
    else:
        head = take("lm_head.weight")
        if head is not None:
            out["lm_head.weight"] = head
    take.check("GPT-2")
    return out


def _llama_to_minillm(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    take = _Take(sd, ignore_suffixes=("rotary_emb.inv_freq",))
    out: dict[str, torch.Tensor] = {}

    def put(ours: str, *theirs: str) -> None:
        parts = [take(name) for name in theirs]
        if all(part is not None for part in parts):
            out[ours] = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]

    put("transformer.wte.weight", "model.embed_tokens.weight")
    put("transformer.ln_f.weight", "model.norm.weight")
    suffixes = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        put(ours + "ln_1.weight", theirs + "input_layernorm.weight")
        put(ours + "ln_2.weight", theirs + "post_attention_layernorm.weight")
        for s in suffixes:
            attn = theirs + "self_attn."
            put(ours + f"attn.c_attn.{s}", *(attn + f"{p}_proj.{s}" for p in "qkv"))
            put(ours + f"attn.c_proj.{s}", attn + f"o_proj.{s}")
            mlp = theirs + "mlp."
            put(ours + f"mlp.c_fc.{s}", mlp + f"gate_proj.{s}", mlp + f"up_proj.{s}")
            put(ours + f"mlp.c_proj.{s}", mlp + f"down_proj.{s}")
    if config.tie_weights:
        if "lm_head.weight" in sd:
            take.used.add("lm_head.weight")
    else:
        put("lm_head.weight", "lm_head.weight")
    take.check("Llama")
    return out


_HF_TO_MINILLM = {"gpt2": _gpt2_to_minillm, "llama": _llama_to_minillm}


def _minillm_to_gpt2(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        is_conv1d = key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        out[key] = value.t().contiguous() if is_conv1d else value.clone()
    if not config.bias:  # GPT-2 always has biases: zeros reproduce a bias-free model exactly
        for i in range(config.n_layer):
            prefix = f"transformer.h.{i}."
            for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                out[prefix + name + ".bias"] = torch.zeros(out[prefix + name + ".weight"].shape[1])
            for ln in ("ln_1", "ln_2"):
                out[prefix + ln + ".bias"] = torch.zeros(config.n_embd)
        out["transformer.ln_f.bias"] = torch.zeros(config.n_embd)
    return out


def _minillm_to_llama(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    q_width = config.n_head * config.head_dim
    kv_width = config.num_kv_heads * config.head_dim
    out = {
        "model.embed_tokens.weight": sd["transformer.wte.weight"],
        "model.norm.weight": sd["transformer.ln_f.weight"],
    }
    if not config.tie_weights:
        out["lm_head.weight"] = sd["lm_head.weight"]
    suffixes = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = sd[ours + "ln_1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = sd[ours + "ln_2.weight"]
        for s in suffixes:
            q, k, v = sd[ours + f"attn.c_attn.{s}"].split([q_width, kv_width, kv_width], dim=0)
            for name, part in zip("qkv", (q, k, v), strict=True):
                out[theirs + f"self_attn.{name}_proj.{s}"] = part
            out[theirs + f"self_attn.o_proj.{s}"] = sd[ours + f"attn.c_proj.{s}"]
            gate, up = sd[ours + f"mlp.c_fc.{s}"].chunk(2, dim=0)
            out[theirs + f"mlp.gate_proj.{s}"] = gate
            out[theirs + f"mlp.up_proj.{s}"] = up
            out[theirs + f"mlp.down_proj.{s}"] = sd[ours + f"mlp.c_proj.{s}"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def _load_into_hf(hf_model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy weights into a transformers model, failing loudly on anything left unmatched."""
    expected = hf_model.state_dict()
    tied = bool(getattr(hf_model.config, "tie_word_embeddings", False))
    optional = {"lm_head.weight"} if tied else set()
    missing = sorted(set(expected) - set(state_dict) - optional)
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [k for k in state_dict if k in expected and expected[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"conversion to transformers failed: missing {missing}, unexpected {unexpected}, "
            f"wrong shapes {wrong}"
        )
    with torch.no_grad():
        for key, value in state_dict.items():
            expected[key].copy_(value)
