"""Weight and configuration layouts of ``transformers``' GPT-2, GPT-NeoX and Llama (lesson 12).

Used by :mod:`minillm.release.hub`: a GPT-2, GPT-NeoX or Llama config to a
:class:`minillm.model.GPTConfig` and back, and state dicts renamed, split, transposed and (for
GPT-NeoX's fused query/key/value rows, grouped by head) permuted in both directions, every key
accounted for (missing and unexpected keys are listed in one error). GPT-NeoX with sequential
residuals (``use_parallel_residual=False``) is GPT-2 with rotary positions: the layout of a
course-shaped model with ``pos_emb="rope"``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from minillm.model.config import GPTConfig


def _config_from_hf(hf_config: Any, layout: str) -> GPTConfig:
    if layout == "gpt2":
        return _config_from_gpt2(hf_config)
    if layout == "gpt_neox":
        return _config_from_gpt_neox(hf_config)
    return _config_from_llama(hf_config)


def _default_rope(c: Any, unsupported: list[str]) -> float:
    """The rope theta of a config with plain rotary positions (problems go to ``unsupported``)."""
    rope = dict(getattr(c, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        unsupported.append(f"rope_type={rope.get('rope_type')!r} (need 'default')")
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        unsupported.append(
            f"partial_rotary_factor={rope['partial_rotary_factor']} (need 1.0: every dimension)"
        )
    return float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)))


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


def _config_from_gpt_neox(c: Any) -> GPTConfig:
    unsupported = []
    if c.hidden_act not in ("gelu_new", "gelu_pytorch_tanh"):
        unsupported.append(f"hidden_act={c.hidden_act!r} (need 'gelu_new')")
    if getattr(c, "use_parallel_residual", True):
        unsupported.append("use_parallel_residual=True (minillm's blocks are sequential)")
    if not getattr(c, "attention_bias", True):
        unsupported.append("attention_bias=False (GPT-NeoX's MLP always has biases)")
    if c.hidden_size % c.num_attention_heads:
        unsupported.append("hidden_size not a multiple of num_attention_heads")
    theta = _default_rope(c, unsupported)
    if unsupported:
        raise ValueError(f"GPT-NeoX options not supported by minillm: {', '.join(unsupported)}")
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_embd=c.hidden_size,
        dropout=0.0,
        bias=True,
        pos_emb="rope",
        tie_weights=bool(getattr(c, "tie_word_embeddings", False)),
        ffn_hidden=c.intermediate_size,
        norm_eps=c.layer_norm_eps,
        rope_theta=theta,
    )


def _config_from_llama(c: Any) -> GPTConfig:
    unsupported = []
    if c.hidden_act != "silu":
        unsupported.append(f"hidden_act={c.hidden_act!r} (need 'silu')")
    theta = _default_rope(c, unsupported)
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
        rope_theta=theta,
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


def _gpt_neox_config_kwargs(config: GPTConfig) -> dict[str, Any]:
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        hidden_act="gelu_new",
        max_position_embeddings=config.block_size,
        layer_norm_eps=config.norm_eps,
        use_parallel_residual=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": config.rope_theta,
            "partial_rotary_factor": 1.0,
        },
        attention_bias=True,
        attention_dropout=config.dropout,
        hidden_dropout=config.dropout,
        tie_word_embeddings=config.tie_weights,
        bos_token_id=None,
        eos_token_id=None,
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


def _qkv_rows(weight: torch.Tensor, n_head: int, *, to_neox: bool) -> torch.Tensor:
    """Reorder fused q/k/v rows: minillm's [q | k | v] <-> GPT-NeoX's [q_h, k_h, v_h] per head."""
    rest = weight.shape[1:]
    grouped = (3, n_head) if to_neox else (n_head, 3)
    parts = weight.reshape(*grouped, weight.shape[0] // (3 * n_head), *rest)
    return parts.transpose(0, 1).reshape(weight.shape).contiguous()


_NEOX_NAMES = {  # minillm suffix -> GPT-NeoX suffix, inside one block
    "ln_1": "input_layernorm",
    "ln_2": "post_attention_layernorm",
    "attn.c_attn": "attention.query_key_value",
    "attn.c_proj": "attention.dense",
    "mlp.c_fc": "mlp.dense_h_to_4h",
    "mlp.c_proj": "mlp.dense_4h_to_h",
}


_NEOX_TOP = {
    "transformer.wte": "gpt_neox.embed_in",
    "transformer.ln_f": "gpt_neox.final_layer_norm",
}


def module_name_to_gpt_neox(name: str) -> str:
    """A minillm module name in GPT-NeoX's naming (``transformer.h.3.attn.c_attn`` ->
    ``gpt_neox.layers.3.attention.query_key_value``); ``lm_head`` keeps its name."""
    found = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", name)
    if found and found.group(2) in _NEOX_NAMES:
        return f"gpt_neox.layers.{found.group(1)}.{_NEOX_NAMES[found.group(2)]}"
    if name in _NEOX_TOP or name == "lm_head":
        return _NEOX_TOP.get(name, name)
    raise ValueError(f"no GPT-NeoX name for minillm module {name!r}")


def module_name_from_gpt_neox(name: str) -> str:
    """The inverse of :func:`module_name_to_gpt_neox`."""
    found = re.fullmatch(r"gpt_neox\.layers\.(\d+)\.(.+)", name)
    inverse = {v: k for k, v in _NEOX_NAMES.items()}
    if found and found.group(2) in inverse:
        return f"transformer.h.{found.group(1)}.{inverse[found.group(2)]}"
    top = {v: k for k, v in _NEOX_TOP.items()}
    if name in top or name == "lm_head":
        return top.get(name, name)
    raise ValueError(f"no minillm module for GPT-NeoX name {name!r}")


def qkv_rows(weight: torch.Tensor, n_head: int, *, to_neox: bool) -> torch.Tensor:
    """Public alias of the fused q/k/v row regrouping (LoRA's B matrices need it too)."""
    return _qkv_rows(weight, n_head, to_neox=to_neox)


def _gpt_neox_to_minillm(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    take = _Take(sd, ignore_suffixes=("rotary_emb.inv_freq", ".attention.bias", ".masked_bias"))
    out: dict[str, torch.Tensor] = {}

    def put(ours: str, theirs: str) -> None:
        value = take(theirs)
        if value is not None:
            out[ours] = value

    put("transformer.wte.weight", "gpt_neox.embed_in.weight")
    for p in ("weight", "bias"):
        put(f"transformer.ln_f.{p}", f"gpt_neox.final_layer_norm.{p}")
        for i in range(config.n_layer):
            for ours, theirs in _NEOX_NAMES.items():
                put(f"transformer.h.{i}.{ours}.{p}", f"gpt_neox.layers.{i}.{theirs}.{p}")
            key = f"transformer.h.{i}.attn.c_attn.{p}"
            if key in out:
                out[key] = _qkv_rows(out[key], config.n_head, to_neox=False)
    if config.tie_weights:
        if "lm_head.weight" in sd:
            take.used.add("lm_head.weight")
    else:
        put("lm_head.weight", "lm_head.weight")
    take.check("GPT-NeoX")
    return out


_HF_TO_MINILLM = {
    "gpt2": _gpt2_to_minillm,
    "gpt_neox": _gpt_neox_to_minillm,
    "llama": _llama_to_minillm,
}


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


def _minillm_to_gpt_neox(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    out = {"gpt_neox.embed_in.weight": sd["transformer.wte.weight"]}
    if not config.tie_weights:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for p in ("weight", "bias"):
        # GPT-NeoX always has biases: zeros reproduce a bias-free model exactly
        zeros = torch.zeros(config.n_embd)
        out[f"gpt_neox.final_layer_norm.{p}"] = sd.get(f"transformer.ln_f.{p}", zeros)
        for i in range(config.n_layer):
            for ours, theirs in _NEOX_NAMES.items():
                weight = sd[f"transformer.h.{i}.{ours}.weight"]
                value = sd.get(f"transformer.h.{i}.{ours}.{p}", torch.zeros(weight.shape[0]))
                if ours == "attn.c_attn":
                    value = _qkv_rows(value, config.n_head, to_neox=True)
                out[f"gpt_neox.layers.{i}.{theirs}.{p}"] = value
    return {k: v.clone().contiguous() for k, v in out.items()}


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
