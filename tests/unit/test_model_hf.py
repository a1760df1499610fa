"""minillm.model <-> Hugging Face transformers: tiny random GPT-2, GPT-NeoX and Llama models."""

from __future__ import annotations

import pytest
import torch

from minillm.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-5  # float32: the bound on the largest logit difference


def hf_gpt2(tie: bool = True, n_inner: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=97,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=n_inner,
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    randomize(model)
    return model


def hf_llama(tie: bool = False, kv_heads: int = 2, bias: bool = False, theta: float = 10000.0):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=56,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32,
        tie_word_embeddings=tie,
        attention_bias=bias,
        mlp_bias=bias,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        bos_token_id=None,
        eos_token_id=None,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    randomize(model)
    return model


def hf_gpt_neox(tie: bool = True, theta: float = 10000.0, intermediate: int = 128):
    """GPT-2's blocks with rotary positions: sequential residuals, every dimension rotated."""
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_act="gelu_new",
        max_position_embeddings=32,
        use_parallel_residual=False,
        rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": 1.0},
        attention_bias=True,
        layer_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = transformers.GPTNeoXForCausalLM(config).eval()
    randomize(model)
    return model


def randomize(model: torch.nn.Module) -> None:
    """Give every weight (norms and biases too) a visible random value, so a swap would show."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if param.dim() == 1 else 0.0))


def tokens(vocab: int = 97, batch: int = 2, length: int = 19) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(3))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


HF_MODELS = {
    "gpt2-tied": lambda: hf_gpt2(tie=True),
    "gpt2-untied-n_inner": lambda: hf_gpt2(tie=False, n_inner=48),
    "llama-gqa": lambda: hf_llama(kv_heads=2),
    "llama-tied-mha": lambda: hf_llama(tie=True, kv_heads=4),
    "llama-mqa-bias-theta": lambda: hf_llama(kv_heads=1, bias=True, theta=500.0),
    "gpt_neox-tied": lambda: hf_gpt_neox(tie=True),
    "gpt_neox-untied-theta-ffn": lambda: hf_gpt_neox(tie=False, theta=500.0, intermediate=56),
}


@pytest.mark.parametrize("name", HF_MODELS)
def test_from_hf_logits_match(name):
    hf = HF_MODELS[name]()
    ours = GPT.from_hf(hf).eval()
    x = tokens()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= ATOL


@pytest.mark.parametrize("name", HF_MODELS)
def test_round_trip_to_hf_keeps_logits_and_weights(name):
    hf = HF_MODELS[name]()
    ours = GPT.from_hf(hf).eval()
    back = ours.to_hf()
    assert type(back) is type(hf)
    x = tokens()
    with torch.no_grad():
        assert max_diff(back(x).logits, hf(x).logits) <= ATOL
    original, returned = hf.state_dict(), back.state_dict()
    assert set(original) == set(returned)
    for key in original:
        torch.testing.assert_close(returned[key], original[key], atol=0, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"bias": False},  # exported to GPT-2 with zero biases
        {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 2, "bias": False},
        {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu", "tie_weights": False},
        {"pos_emb": "rope"},  # GPT-2 with rotary positions: GPT-NeoX
        {"pos_emb": "rope", "bias": False, "tie_weights": False},  # zero biases in GPT-NeoX
    ],
    ids=["gpt2", "gpt2-no-bias", "llama", "llama-untied-bias", "gpt_neox", "gpt_neox-no-bias"],
)
def test_to_hf_from_a_fresh_minillm_model(overrides):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32, **overrides)
    ours = GPT(config).eval()
    randomize(ours)
    hf = ours.to_hf()
    x = tokens()
    with torch.no_grad():
        assert max_diff(hf(x).logits, ours(x)[0]) <= ATOL
        again = GPT.from_hf(hf).eval()
        assert max_diff(again(x)[0], ours(x)[0]) <= ATOL


def test_from_hf_state_dict_with_config():
    hf = hf_llama()
    ours = GPT.from_hf(hf.state_dict(), config=hf.config).eval()
    x = tokens()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= ATOL
    with pytest.raises(ValueError, match="needs config="):
        GPT.from_hf(hf.state_dict())


def test_greedy_generation_matches_transformers_generate():
    hf = hf_gpt2()
    ours = GPT.from_hf(hf).eval()
    prompt = tokens(batch=1, length=4)
    expected = hf.generate(
        prompt, max_new_tokens=12, do_sample=False, pad_token_id=0, attention_mask=None
    )
    assert torch.equal(ours.generate(prompt, 12, temperature=0), expected)


def test_missing_unexpected_and_misshapen_weights_are_listed():
    hf = hf_gpt2()
    state = dict(hf.state_dict())
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.h.0.attn.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError) as err:
        GPT.from_hf(state, config=hf.config)
    assert "missing keys: ['transformer.h.1.mlp.c_fc.bias']" in str(err.value)
    assert "unexpected keys: ['transformer.h.0.attn.extra.weight']" in str(err.value)

    state = dict(hf.state_dict())
    state["transformer.h.0.attn.c_attn.weight"] = torch.zeros(32, 90)
    with pytest.raises(ValueError, match=r"c_attn.weight: expected \(96, 32\), got \(90, 32\)"):
        GPT.from_hf(state, config=hf.config)


def test_unrecognised_layout_and_unsupported_options():
    with pytest.raises(ValueError, match="neither a GPT-2 layout"):
        GPT.from_hf({"encoder.weight": torch.zeros(1)}, config=hf_gpt2().config)
    relu = transformers.GPT2Config(
        vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2, activation_function="relu"
    )
    with pytest.raises(ValueError, match="activation_function='relu'"):
        GPT.from_hf(transformers.GPT2LMHeadModel(relu))
    mixed = GPT(
        GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, mlp="swiglu")
    )
    with pytest.raises(ValueError, match="fits no Hugging Face layout.*mlp='swiglu'"):
        mixed.to_hf()
    parallel = transformers.GPTNeoXConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2
    )  # transformers' defaults: parallel residuals, a quarter of each head rotated
    with pytest.raises(ValueError) as err:
        GPT.from_hf(transformers.GPTNeoXForCausalLM(parallel))
    assert "use_parallel_residual=True" in str(err.value)
    assert "partial_rotary_factor=0.25" in str(err.value)
    with pytest.raises(TypeError, match="transformers model or a state dict"):
        GPT.from_hf("gpt2")


@pytest.mark.parametrize(
    "build", [hf_gpt2, hf_gpt_neox, hf_llama], ids=["gpt2", "gpt_neox", "llama"]
)
def test_from_pretrained_reads_a_local_save_pretrained_folder(build, tmp_path):
    hf = build()
    hf.save_pretrained(tmp_path / "tiny")
    ours = GPT.from_pretrained(tmp_path / "tiny").eval()
    x = tokens()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= ATOL


def test_from_pretrained_offline_says_how_to_use_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as err:
        GPT.from_pretrained("openai-community/gpt2")
    message = str(err.value)
    assert "offline" in message.lower() or "HF_HUB_OFFLINE" in message
    assert "save_pretrained" in message and "GPT.from_pretrained('some/folder')" in message
