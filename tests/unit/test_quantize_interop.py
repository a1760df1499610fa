"""minillm's quantization against the real libraries: gguf (llama.cpp's formats) and torchao.

Everything is built locally; nothing is downloaded.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from minillm.model import GPT, GPTConfig
from minillm.quantize import QuantLinear, linear_names, quantize_model, quantize_weight

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType  # noqa: E402

from minillm.quantize import gguf as G  # noqa: E402


def weights(seed: int) -> list[torch.Tensor]:
    """Matrices like a model's, plus the awkward cases: zero blocks, outliers, ties."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(64, 96, generator=g) * 0.02
    outliers = normal.clone()
    outliers[3, 5], outliers[10, 40] = 1.5, -2.0
    zeros = normal.clone()
    zeros[:, :32] = 0
    grid = (torch.randint(-16, 17, (8, 64), generator=g) / 8.0).float()  # exact halves: ties
    return [normal, outliers, zeros, grid]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_q8_0_blocks_equal_gguf_byte_for_byte(seed):
    for w in weights(seed):
        ours = G.quantize_blocks(w, "q8_0")
        theirs = gguf.quants.quantize(w.numpy(), GGMLQuantizationType.Q8_0)
        assert ours.dtype == theirs.dtype == np.uint8 and ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), f"{(ours != theirs).sum()} bytes differ"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_q4_0_nibbles_agree_and_dequantize_to_the_same_values(seed):
    for w in weights(seed):
        ours = G.quantize_blocks(w, "q4_0")
        theirs = gguf.quants.quantize(w.numpy(), GGMLQuantizationType.Q4_0)
        assert ours.shape == theirs.shape
        blocks_ours, blocks_theirs = ours.reshape(-1, 18), theirs.reshape(-1, 18)
        assert np.array_equal(blocks_ours[:, :2], blocks_theirs[:, :2]), "fp16 scales differ"
        nib = [np.concatenate([b[:, 2:] & 15, b[:, 2:] >> 4]) for b in (blocks_ours, blocks_theirs)]
        agree = float((nib[0] == nib[1]).mean())
        assert agree >= 0.999, f"nibble agreement {agree:.5f} < 0.999"
        values = gguf.quants.dequantize(theirs, GGMLQuantizationType.Q4_0)
        mine = G.dequantize_blocks(ours, "q4_0")
        if agree == 1.0:
            assert np.abs(mine - values).max() <= 1e-7


def test_our_dequantize_equals_gguf_dequantize():
    w = weights(5)[0]
    for qtype, enum in (("q8_0", GGMLQuantizationType.Q8_0), ("q4_0", GGMLQuantizationType.Q4_0)):
        data = gguf.quants.quantize(w.numpy(), enum)
        np.testing.assert_array_equal(
            G.dequantize_blocks(data, qtype), gguf.quants.dequantize(data, enum)
        )
        q = quantize_weight(w, 8 if qtype == "q8_0" else 4, scheme=qtype)
        np.testing.assert_allclose(
            q.dequantize().numpy(), gguf.quants.dequantize(data, enum), atol=1e-7, rtol=0
        )


def test_fused_multiply_add_moves_some_q4_0_codes():
    w = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))
    groups = w.reshape(512, -1, 32)
    from minillm.quantize import q4_0_rule

    _, unfused = q4_0_rule(groups)
    _, fused = q4_0_rule(groups, fma=True)
    differ = (unfused != fused).float().mean().item()
    assert (unfused - fused).abs().max() <= 1  # a rounding difference moves a code by one at most
    assert differ < 1e-3, differ


def test_blocks_need_rows_of_whole_blocks():
    with pytest.raises(ValueError, match="not a multiple of 32"):
        G.quantize_blocks(torch.randn(4, 40), "q8_0")
    with pytest.raises(ValueError, match="qtype must be"):
        G.quantize_blocks(torch.randn(4, 32), "q5_k")


@pytest.mark.parametrize(
    "qtype, pos_emb, arch",
    [("q8_0", "learned", "gpt2"), ("q4_0", "learned", "gpt2"), ("q8_0", "rope", "gptneox")],
)
def test_gguf_file_reads_back_with_the_same_tensors(tmp_path, qtype, pos_emb, arch):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("course", n_layer=1, pos_emb=pos_emb)).eval()
    path = G.write_gguf(model, tmp_path / "model.gguf", qtype)
    tensors = G.read_gguf(path)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    assert set(tensors) == {G.gguf_name(k) for k in state}
    for name, value in state.items():
        kind, array = tensors[G.gguf_name(name)]
        if kind == "F32":
            np.testing.assert_array_equal(array, value.numpy())
        else:
            assert kind == qtype.upper() and name != "transformer.wpe.weight"
            expected = quantize_weight(value, 8 if qtype == "q8_0" else 4, scheme=qtype)
            np.testing.assert_allclose(array, expected.dequantize().numpy(), atol=1e-7, rtol=0)
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == arch
    assert reader.fields[f"{arch}.block_count"].contents() == 1
    if arch == "gptneox":
        assert reader.fields["gptneox.rope.dimension_count"].contents() == model.config.head_dim
        assert reader.fields["gptneox.use_parallel_residual"].contents() is False


def test_gguf_refuses_blocks_llama_cpp_would_misread(tmp_path):
    model = GPT(GPTConfig.preset("llama-small", n_layer=1))
    with pytest.raises(ValueError, match="GPT-2's blocks.*norm='rmsnorm'.*mlp='swiglu'"):
        G.write_gguf(model, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


# ---- torchao ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchao_quant():
    logging.disable(logging.WARNING)  # torchao logs about optional CUDA kernels on import
    try:
        ao = pytest.importorskip("torchao.quantization")
    finally:
        logging.disable(logging.NOTSET)
    return ao


def test_int8_weight_only_equals_torchao(torchao_quant):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("course", n_layer=2)).eval()
    ids = torch.randint(0, 2048, (2, 64))
    theirs = GPT(model.config).eval()
    theirs.load_state_dict(model.state_dict())
    torchao_quant.quantize_(
        theirs,
        torchao_quant.Int8WeightOnlyConfig(),
        filter_fn=lambda m, n: n != "lm_head" and isinstance(m, torch.nn.Linear),
    )
    # torchao's convention: scale = max|w| / 127.5 (half of the 255 steps), kept in fp32
    ours = quantize_model(model, 8, qmax=127.5, scale_dtype=torch.float32, include_embedding=False)
    for name in linear_names(model):
        if name == "lm_head":
            continue
        ao_weight = theirs.get_submodule(name).weight
        mine = ours.get_submodule(name)
        assert isinstance(mine, QuantLinear)
        assert torch.equal(
            (mine.qweight.codes().to(torch.int16) - 128).to(torch.int8), ao_weight.qdata
        )
        torch.testing.assert_close(
            mine.qweight.scale.reshape(-1), ao_weight.scale.reshape(-1), rtol=1e-6, atol=0
        )
    with torch.inference_mode():
        a, b = theirs(ids)[0], ours(ids)[0]
    rel = ((a - b).norm() / a.norm()).item()
    assert rel <= 1e-5, f"relative difference {rel:.2e} > 1e-5"


def test_int4_cpu_kernel_path_matches_torchao_layouts(torchao_quant):
    """torchao's CPU int4 (tinygemm) layer and ours run the same PyTorch kernel."""
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 288)
    reference = torch.nn.Sequential(torch.nn.Linear(96, 288))
    reference.load_state_dict({"0." + k: v for k, v in linear.state_dict().items()})
    torchao_quant.quantize_(reference, PrototypeInt4WeightOnlyConfig(group_size=32))
    x = torch.randn(4, 96)
    ours = QuantLinear.from_linear(linear, 4, group_size=32, scheme="minmax", backend="kernel")
    with torch.inference_mode():
        exact = linear(x)
        err_ao = (reference(x) - exact).norm() / exact.norm()
        err_ours = (ours(x) - exact).norm() / exact.norm()
    # different min/max rules (float vs integer zero point), the same 4-bit budget
    assert err_ours < 2 * err_ao and err_ao < 2 * err_ours, (float(err_ours), float(err_ao))
