"""minillm.quantize.qtensor and minillm.quantize: packing, the schemes, quantized models, files, sizes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minillm.model import GPT, GPTConfig
from minillm.quantize import (
    QuantEmbedding,
    QuantLinear,
    dequantize,
    is_quantized_file,
    linear_names,
    load_quantized,
    logit_agreement,
    model_size_bytes,
    pack_codes,
    quantize_model,
    quantize_weight,
    save_quantized,
    unpack_codes,
)


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("course", n_layer=2)).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 2048, (2, 64), generator=torch.Generator().manual_seed(1))


# ---- packing ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(2, 8),
    rows=st.integers(1, 4),
    blocks=st.integers(1, 6),
    seed=st.integers(0, 99),
)
def test_pack_then_unpack_is_the_identity(bits, rows, blocks, seed):
    n = 8 * blocks  # any multiple of 8 codes fills whole bytes for every width
    codes = torch.randint(0, 1 << bits, (rows, n), generator=torch.Generator().manual_seed(seed))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, n * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, n).long(), codes)


def test_int4_packs_two_codes_per_byte_low_nibble_first():
    packed = pack_codes(torch.tensor([[1, 2, 15, 0]]), 4)
    assert packed.tolist() == [[1 | 2 << 4, 15]]


def test_pack_rejects_codes_out_of_range_and_partial_bytes():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_codes(torch.tensor([[16, 0]]), 4)
    with pytest.raises(ValueError, match="whole bytes"):
        pack_codes(torch.zeros(1, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="bits must be an int from 2 to 8"):
        pack_codes(torch.zeros(1, 8, dtype=torch.long), 9)


# ---- the schemes -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([3, 4, 8]), seed=st.integers(0, 999), symmetric=st.booleans())
def test_round_to_nearest_error_is_at_most_half_a_step(bits, seed, symmetric):
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(seed))
    q = quantize_weight(w, bits, group_size=32, scheme="absmax" if symmetric else "minmax")
    step = q.scale.float().repeat_interleave(32, dim=1)  # (16, 64): each weight's step size
    err = (q.dequantize() - w).abs()
    # half a step, plus what rounding the scale to fp16 (relative error <= 2^-11) can cost at
    # the end of the range, up to 2^bits steps away from zero
    bound = step * (0.5 + (1 << bits) * 2.0**-11)
    assert bool((err <= bound).all()), float((err / step).max())
    assert q.dequantize().shape == w.shape


def test_absmax_scale_and_codes_by_hand():
    w = torch.tensor([[0.5, -1.27, 0.0, 0.3]])
    q = quantize_weight(w, 8, scale_dtype=torch.float32)
    assert math.isclose(float(q.scale), 1.27 / 127, rel_tol=1e-6)
    # codes are stored unsigned with the zero point 128
    assert (q.codes().long() - 128).tolist() == [[50, -127, 0, 30]]


def test_minmax_represents_zero_exactly_and_uses_the_whole_range():
    w = torch.tensor([[0.0, 0.1, 0.2, 0.9, 1.5, 0.7, 0.3, 0.4]])  # all >= 0: range [0, 1.5]
    q = quantize_weight(w, 4, scheme="minmax")
    assert q.zero is not None and int(q.zero) == 0
    assert float(q.dequantize()[0, 0]) == 0.0
    assert int(q.codes().max()) == 15


def test_per_tensor_per_channel_and_group_scale_shapes():
    w = torch.randn(6, 64)
    assert quantize_weight(w, 8, per_tensor=True).scale.shape == (1, 1)
    assert quantize_weight(w, 8).scale.shape == (6, 1)
    assert quantize_weight(w, 4, group_size=16).scale.shape == (6, 4)
    assert quantize_weight(w, 8, group_size=16).scale.dtype == torch.float16


def test_smaller_groups_give_smaller_error():
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(3))
    w[:, 7] *= 20  # an outlier column, as large models have
    errors = [
        float((quantize_weight(w, 4, group_size=g).dequantize() - w).pow(2).mean())
        for g in (256, 64, 16)
    ]
    assert errors[0] > errors[1] > errors[2], errors


def test_a_group_size_that_does_not_divide_the_width_is_an_error_or_explicit_padding():
    w = torch.randn(4, 96)
    with pytest.raises(ValueError, match=r"group_size 40 does not divide the input width 96"):
        quantize_weight(w, 4, group_size=40)
    q = quantize_weight(w, 4, group_size=40, pad=True)
    assert q.padded_in == 120 and q.scale.shape == (4, 3)
    padded = quantize_weight(torch.nn.functional.pad(w, (0, 24)), 4, group_size=40)
    assert torch.equal(q.dequantize(), padded.dequantize()[:, :96])


def test_quantize_model_names_the_layer_with_a_bad_group_size(gpt):
    with pytest.raises(
        ValueError, match=r"layer transformer\.h\.0\.attn\.c_attn .*does not divide"
    ):
        quantize_model(gpt, 4, group_size=40)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=1), "bits must be an int from 2 to 8"),
        (dict(bits=8, scheme="nf4"), "unknown scheme 'nf4'"),
        (dict(bits=4, scheme="q8_0"), "q8_0 means 8 bits"),
        (dict(bits=8, scale_dtype=torch.bfloat16), "scale_dtype must be"),
        (dict(bits=8, group_size=0), "group_size must be a positive int"),
        (dict(bits=8, group_size=32, per_tensor=True), "per_tensor=True"),
    ],
)
def test_bad_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_weight(torch.randn(4, 64), **kwargs)


def test_bad_weight_type_is_a_type_error():
    with pytest.raises(TypeError, match="2-D tensor"):
        quantize_weight(torch.randn(64), 8)


# ---- models ----------------------------------------------------------------------------------


def test_quantize_model_leaves_the_original_alone_and_shares_the_tied_matrix(gpt, ids):
    before = gpt(ids)[0]
    q = quantize_model(gpt, 4, group_size=32)
    assert torch.equal(gpt(ids)[0], before)
    assert isinstance(q.lm_head, QuantLinear) and isinstance(q.transformer.wte, QuantEmbedding)
    assert q.lm_head.packed is q.transformer.wte.packed  # one matrix, two uses
    linears = [n for n in linear_names(gpt)]
    assert all(isinstance(q.get_submodule(n), QuantLinear) for n in linears)


def test_embedding_switch_keeps_the_tied_matrix_float(gpt):
    q = quantize_model(gpt, 8, include_embedding=False)
    assert isinstance(q.lm_head, nn.Linear) and q.lm_head.weight is q.transformer.wte.weight
    assert isinstance(q.transformer.h[0].mlp.c_fc, QuantLinear)


def test_quantized_embedding_lookup_equals_the_dequantized_table(gpt, ids):
    q = quantize_model(gpt, 4, group_size=32)
    table = q.lm_head.qweight.dequantize()
    assert torch.equal(q.transformer.wte(ids), table[ids])


def test_int8_model_is_close_to_the_float_model(gpt, ids):
    q = quantize_model(gpt, 8)
    result = logit_agreement(gpt, {"int8": q, "self": gpt}, torch.randint(0, 2048, (600,)))
    assert result["self"].mean_kl == 0.0 and result["self"].top1 == 1.0
    assert 0 < result["int8"].mean_kl < 1e-3 and result["int8"].top1 > 0.9


def test_dequantize_returns_the_same_function_as_a_float_model(gpt, ids):
    q = quantize_model(gpt, 4, group_size=32, scheme="minmax")
    d = dequantize(q)
    assert not any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in d.modules())
    assert d.lm_head.weight is d.transformer.wte.weight
    torch.testing.assert_close(d(ids)[0], q(ids)[0], rtol=1e-5, atol=1e-5)


def test_kernel_backend_matches_dequantize_backend(gpt, ids):
    for kwargs in (
        dict(bits=8),
        dict(bits=4, group_size=32),
        dict(bits=4, scheme="minmax", group_size=32),
    ):
        slow = quantize_model(gpt, **kwargs)
        fast = quantize_model(gpt, **kwargs, backend="kernel")
        torch.testing.assert_close(fast(ids)[0], slow(ids)[0], rtol=1e-4, atol=1e-4)


def test_kernel_bf16_backend_rounds_only_the_activations(gpt, ids):
    """kernel-bf16 equals the kernel on bfloat16-rounded inputs, returned in the input's dtype."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=False)  # a bias is added in float32 after the matmul
    x = torch.randn(5, 64)
    exact = QuantLinear.from_linear(linear, 4, group_size=32, backend="kernel")
    fast = QuantLinear.from_linear(linear, 4, group_size=32, backend="kernel-bf16")
    with torch.inference_mode():
        y = fast(x)
        want = exact(x.to(torch.bfloat16)).float()
        close = exact(x)
    assert y.dtype == torch.float32, y.dtype
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    rel = float((y - close).norm() / close.norm())
    assert 0 < rel < 2e-2, f"bf16 activations should move the output a little, got {rel:.2e}"
    with pytest.raises(ValueError, match="backend must be one of"):
        quantize_model(gpt, 4, group_size=32, backend="kernel_bf16")


def test_sizes_count_the_tied_matrix_once_and_match_the_file_on_disk(gpt, tmp_path):
    n_params = sum(p.numel() for p in gpt.parameters())  # parameters() lists tied ones once
    assert model_size_bytes(gpt) == 4 * n_params
    for bits, group_size, limit in [(8, None, 0.30), (4, 32, 0.18)]:
        q = quantize_model(gpt, bits, group_size)
        path = save_quantized(q, tmp_path / f"int{bits}.safetensors")
        on_disk = path.stat().st_size
        assert model_size_bytes(q) <= on_disk <= model_size_bytes(q) + 16_384, (
            on_disk,
            model_size_bytes(q),
        )
        assert on_disk / model_size_bytes(gpt) <= limit, on_disk / model_size_bytes(gpt)


def test_save_and_load_round_trip(gpt, ids, tmp_path):
    for kwargs in (
        dict(bits=4, group_size=32),
        dict(bits=3, group_size=32, scheme="minmax"),
        dict(bits=8, include_embedding=False),
    ):
        q = quantize_model(gpt, **kwargs)
        path = save_quantized(q, tmp_path / "q.safetensors")
        assert is_quantized_file(path)
        loaded = load_quantized(path)
        assert torch.equal(loaded(ids)[0], q(ids)[0])
        if kwargs.get("include_embedding", True):
            assert loaded.lm_head.packed is loaded.transformer.wte.packed


def test_loading_something_else_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no quantized model"):
        load_quantized(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not a safetensors file")
    assert not is_quantized_file(other)
    with pytest.raises(ValueError, match="not a quantized model"):
        load_quantized(other)


def test_only_the_named_layers_are_quantized(gpt):
    q = quantize_model(gpt, 4, group_size=32, modules=["transformer.h.1.mlp.c_fc"])
    kinds = {
        n: type(m).__name__ for n, m in q.named_modules() if isinstance(m, (nn.Linear, QuantLinear))
    }
    assert [n for n, k in kinds.items() if k == "QuantLinear"] == ["transformer.h.1.mlp.c_fc"]
    with pytest.raises(ValueError, match="no linear layers named"):
        quantize_model(gpt, 4, modules=["transformer.h.9.mlp.c_fc"])


def test_a_quantized_model_generates_like_its_dequantized_copy(gpt):
    q = quantize_model(gpt, 4, group_size=32)
    prompt = torch.tensor([[1, 2, 3]])
    out = q.generate(prompt, 8, temperature=0)
    assert torch.equal(out, dequantize(q).generate(prompt, 8, temperature=0))
