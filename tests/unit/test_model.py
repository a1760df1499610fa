"""minillm.model: configuration, forward pass, attention paths, KV cache, generation, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.model import GPT, PRESETS, GPTConfig, KVCache

TINY = dict(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32)

# (name, overrides): the architecture switches the KV cache and the attention paths must handle.
VARIANTS = [
    ("gpt2-style", {}),
    ("rope", {"pos_emb": "rope"}),
    ("gqa", {"n_kv_head": 2}),
    ("mqa-rope", {"n_kv_head": 1, "pos_emb": "rope"}),
    (
        "llama-style",
        {"n_kv_head": 2, "pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
    ),
]


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


def ids(model: GPT, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=gen)


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"n_embd": 30}, "n_embd"),
        ({"n_kv_head": 3}, "n_kv_head"),
        ({"n_layer": 0}, "n_layer"),
        ({"vocab_size": -5}, "vocab_size"),
        ({"block_size": 2.5}, "block_size"),
        ({"norm": "batchnorm"}, "norm"),
        ({"mlp": "relu"}, "mlp"),
        ({"pos_emb": "alibi"}, "pos_emb"),
        ({"attn": "flash"}, "attn"),
        ({"dropout": 1.0}, "dropout"),
        ({"ffn_hidden": 0}, "ffn_hidden"),
        ({"n_head": 4, "n_embd": 36, "pos_emb": "rope"}, "n_embd"),  # odd head size for RoPE
    ],
)
def test_config_validation_names_the_field(overrides, named):
    with pytest.raises(ValueError, match=named):
        GPTConfig(**{**TINY, **overrides})


def test_config_errors_list_allowed_values():
    with pytest.raises(ValueError, match="layernorm.*rmsnorm"):
        GPTConfig(**{**TINY, "norm": "batchnorm"})


def test_presets_build_and_accept_overrides():
    assert {"course", "gpt2", "llama-small"} <= set(PRESETS)
    config = GPTConfig.preset("course", n_layer=1, attn="plain")
    assert config.n_layer == 1 and config.attn == "plain"
    llama = GPTConfig.preset("llama-small")
    assert (llama.pos_emb, llama.norm, llama.mlp, llama.bias) == (
        "rope",
        "rmsnorm",
        "swiglu",
        False,
    )
    assert llama.num_kv_heads < llama.n_head
    with pytest.raises(ValueError, match="unknown preset 'nope'.*course"):
        GPTConfig.preset("nope")
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig.preset("course", n_layers=3)


def test_config_dict_round_trip():
    config = GPTConfig.preset("llama-small", dropout=0.1)
    assert GPTConfig.from_dict(config.to_dict()) == config


def test_gpt2_preset_has_the_published_parameter_count():
    # Hugging Face's "gpt2" reports 124,439,808 parameters (tied embeddings counted once).
    with torch.device("meta"):
        model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_params() == 124_439_808


# ---- the model -------------------------------------------------------------------------------


def test_forward_shapes_and_loss_matches_cross_entropy():
    model = tiny()
    x, y = ids(model, 3, 10), ids(model, 3, 10, seed=2)
    logits, loss = model(x, y)
    assert logits.shape == (3, 10, 61)
    expected = F.cross_entropy(logits.reshape(-1, 61), y.reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert model(x)[1] is None


def test_loss_ignores_negative_targets():
    model = tiny()
    x, y = ids(model, 2, 8), ids(model, 2, 8, seed=2)
    logits, _ = model(x)
    masked = y.clone()
    masked[:, :3] = -1
    masked[0, 5] = -100
    keep = masked >= 0
    expected = F.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(model(x, masked)[1], expected)


def test_initial_loss_is_close_to_uniform_guess():
    model = tiny()
    _, loss = model(ids(model, 4, 24), ids(model, 4, 24, seed=3))
    assert abs(loss.item() - math.log(61)) < 0.1


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_sdpa_and_plain_attention_agree(name, overrides):
    fast = tiny(**overrides)
    plain = GPT(GPTConfig(**{**TINY, **overrides, "attn": "plain"})).eval()
    plain.load_state_dict(fast.state_dict())
    x = ids(fast, 2, 17)
    torch.testing.assert_close(plain(x)[0], fast(x)[0], atol=1e-5, rtol=1e-5)


def test_weight_tying():
    tied, untied = tiny(), tiny(tie_weights=False)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params() - tied.num_params() == 61 * 32


def test_num_params_matches_the_formula():
    V, T, L, d = 61, 24, 2, 32
    model = tiny()
    per_layer = 12 * d * d + 13 * d  # qkv, proj, fc, proj weights + their biases + two LayerNorms
    assert model.num_params() == V * d + T * d + L * per_layer + 2 * d
    assert model.num_params(non_embedding=True) == L * per_layer + 2 * d
    assert model.num_params() == sum(p.numel() for p in model.parameters())


def test_flops_per_token_formula():
    V, T, L, d = 61, 24, 2, 32
    model = tiny()
    matmul_weights = L * 12 * d * d + V * d  # block linears + the output projection
    assert model.flops_per_token() == 6 * matmul_weights + 12 * L * d * T
    assert model.flops_per_token(seq_len=8) == 6 * matmul_weights + 12 * L * d * 8


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=256))
    block = model.transformer.h[3]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert torch.all(block.attn.c_attn.bias == 0)


def test_every_parameter_gets_a_gradient():
    model = tiny(n_kv_head=2, pos_emb="rope", mlp="swiglu", norm="rmsnorm").train()
    _, loss = model(ids(model, 2, 12), ids(model, 2, 12, seed=2))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_dropout_only_in_training_mode():
    model = tiny(dropout=0.5)
    x = ids(model, 1, 10)
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


# ---- KV cache --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[v[0] for v in VARIANTS])
@pytest.mark.parametrize("length", [1, 7, 24])
def test_kv_cache_step_by_step_equals_full_forward(name, overrides, length):
    model = tiny(**overrides)
    x = ids(model, 2, length)
    full = model(x)[0]
    cache = model.new_kv_cache(batch_size=2)
    steps = [model(x[:, t : t + 1], kv_cache=cache)[0] for t in range(length)]
    assert cache.length == length
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "plain"])
@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_kv_cache_in_chunks_equals_full_forward(name, overrides, attn):
    model = tiny(**overrides, attn=attn)
    x = ids(model, 2, 20)
    cache = model.new_kv_cache(batch_size=2)
    chunks = [model(x[:, a:b], kv_cache=cache)[0] for a, b in ((0, 6), (6, 7), (7, 15), (15, 20))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), model(x)[0], atol=1e-5, rtol=1e-5)


def test_kv_cache_overflow_and_batch_mismatch_are_errors():
    model = tiny()
    cache = model.new_kv_cache(batch_size=1)
    model(ids(model, 1, 20), kv_cache=cache)
    with pytest.raises(ValueError, match="20.*25.*24"):
        model(ids(model, 1, 5), kv_cache=cache)
    with pytest.raises(ValueError, match="batch size 1"):
        model(ids(model, 2, 1), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        KVCache(model.config, batch_size=1, max_len=25)


# ---- generation ------------------------------------------------------------------------------


def greedy_without_cache(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        logits = model(idx[:, -model.config.block_size :])[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize(("name", "overrides"), VARIANTS[:3], ids=[v[0] for v in VARIANTS[:3]])
def test_greedy_generate_matches_recomputing_the_prefix(name, overrides):
    model = tiny(**overrides)
    prompt = ids(model, 2, 5)
    # 19 new tokens fill the context exactly (5 + 19 = 24): the cache never slides here.
    torch.testing.assert_close(
        model.generate(prompt, 19, temperature=0), greedy_without_cache(model, prompt, 19)
    )


def test_generate_is_seeded_and_restores_training_mode():
    model = tiny().train()
    prompt = ids(model, 2, 3)

    def sample(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 12, temperature=1.0, top_k=10, generator=gen)

    first = sample(7)
    assert model.training
    assert torch.equal(first, sample(7))
    assert not torch.equal(first, sample(8))
    assert torch.equal(first[:, :3], prompt) and first.shape == (2, 15)


def test_top_k_one_is_greedy():
    model = tiny()
    prompt = ids(model, 1, 4)
    gen = torch.Generator().manual_seed(0)
    sampled = model.generate(prompt, 8, temperature=1.3, top_k=1, generator=gen)
    assert torch.equal(sampled, model.generate(prompt, 8, temperature=0))


def test_generate_past_the_context_length_slides_the_window():
    model = tiny(pos_emb="rope")
    prompt = ids(model, 1, 30)  # longer than block_size 24: the last 24 tokens are the context
    out = model.generate(prompt, 40, temperature=0)
    assert out.shape == (1, 70)
    assert torch.equal(out[:, :30], prompt)
    assert int(out.max()) < model.config.vocab_size


def test_generate_rejects_bad_arguments():
    model = tiny()
    prompt = ids(model, 1, 3)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, -2)


# ---- bad input -------------------------------------------------------------------------------


def test_sequence_longer_than_context_names_both_lengths():
    model = tiny()
    with pytest.raises(ValueError, match=r"30.*block_size=24"):
        model(ids(model, 1, 30))


@pytest.mark.parametrize("bad_id", [61, 1000, -3])
def test_token_outside_vocabulary_names_id_and_size(bad_id):
    model = tiny()
    x = ids(model, 1, 5)
    x[0, 2] = bad_id
    with pytest.raises(ValueError, match=rf"token id {bad_id}.*vocab_size=61"):
        model(x)


def test_wrong_input_types_and_shapes():
    model = tiny()
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        model(ids(model, 2, 4), ids(model, 2, 5))


def test_load_weights_lists_every_problem():
    model = tiny()
    state = dict(model.state_dict())
    del state["transformer.h.0.ln_1.weight"]
    state["transformer.h.9.extra"] = torch.zeros(3)
    state["transformer.wpe.weight"] = torch.zeros(99, 32)
    with pytest.raises(ValueError) as err:
        model.load_weights(state)
    message = str(err.value)
    assert "missing keys: ['transformer.h.0.ln_1.weight']" in message
    assert "unexpected keys: ['transformer.h.9.extra']" in message
    assert "transformer.wpe.weight: expected (24, 32), got (99, 32)" in message


def test_load_weights_copies_values():
    source, target = tiny(), tiny(pos_emb="learned")
    torch.manual_seed(5)
    source = GPT(source.config).eval()
    target.load_weights(source.state_dict())
    x = ids(source, 1, 9)
    torch.testing.assert_close(target(x)[0], source(x)[0])
