"""minillm.train.precision and the float16 / torch.compile paths of minillm.train and minillm.model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minillm.model import GPT, GPTConfig
from minillm.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train
from minillm.train import precision as P

VOCAB, BLOCK = 32, 16


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))


def counting_tokens(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(0)
    tokens = np.arange(n) % 20
    noisy = rng.random(n) < 0.05
    tokens[noisy] = rng.integers(0, VOCAB, noisy.sum())
    return tokens.astype(np.uint16)


def config(tmp_path, **changes) -> TrainConfig:
    settings = dict(
        out_dir=str(tmp_path / "run"),
        max_steps=4,
        batch_size=4,
        learning_rate=1e-2,
        warmup_steps=1,
        eval_interval=100,
        eval_batches=1,
        log_interval=100,
        checkpoint_interval=0,
        progress=False,
        peak_gflops=10.0,
        device="cpu",
    )
    settings.update(changes)
    return TrainConfig(**settings)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (4, BLOCK + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


# ---- the formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(P.FORMATS))
def test_bit_fields_rebuild_every_normal_number(name):
    fmt = P.FORMATS[name]
    values = (torch.randn(2000, generator=torch.Generator().manual_seed(1)) * 20).to(fmt.dtype)
    sign, exponent, mantissa = P.float_fields(values)
    normal = (exponent > 0) & (exponent < 2**fmt.exponent_bits - 1)
    rebuilt = (
        (-1.0) ** sign.double()
        * 2.0 ** (exponent.double() - fmt.bias)
        * (1 + mantissa.double() / 2**fmt.mantissa_bits)
    )
    assert normal.sum() > 1000
    assert torch.equal(rebuilt[normal], values.double()[normal])


def test_format_table_reads_finfo():
    rows = {r["format"]: r for r in P.format_table()}
    assert rows["float16"]["max"] == 65504.0
    assert rows["bfloat16"]["eps"] == 2.0**-7
    assert rows["float8_e4m3fn"]["max"] == 448.0
    assert rows["float16"]["smallest_subnormal"] == 2.0**-24
    assert [r["bits"] for r in rows.values()] == [32, 16, 16, 8, 8]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_spacing_is_the_gap_to_the_next_number(dtype):
    values = (torch.randn(500, generator=torch.Generator().manual_seed(2)) * 300).to(dtype).abs()
    values = torch.cat([values, torch.tensor([1.0, 4.0, 1e-6], dtype=dtype)])
    following = torch.nextafter(values, torch.tensor(float("inf"), dtype=dtype))
    assert torch.equal(P.spacing(values, dtype), following.double() - values.double())
    assert P.spacing(4.0, torch.bfloat16).item() == 2.0**-5  # why 4 + 0.01 rounds back to 4


def test_unknown_formats_and_dtypes_are_refused():
    with pytest.raises(ValueError, match="known formats"):
        P.get_format(torch.float64)
    with pytest.raises(TypeError, match="float tensor"):
        P.float_fields(torch.arange(3))
    with pytest.raises(ValueError, match="dtype must be one of"):
        P.autocast_context("float8", "cpu")
    with pytest.raises(ValueError, match="init_scale"):
        P.make_grad_scaler("float16", "cpu", init_scale=0)


def test_only_float16_gets_an_enabled_scaler():
    assert P.make_grad_scaler("float16", "cpu").is_enabled()
    assert not P.make_grad_scaler("bfloat16", "cpu").is_enabled()
    assert not P.make_grad_scaler("float32", "cpu").is_enabled()


# ---- autocast: dtypes and memory --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_dtypes_on_cpu(dtype):
    low = P.DTYPES[dtype]
    got = P.autocast_dtypes(tiny_gpt(), *batch(), dtype, "cpu")
    assert got["params"] == got["grads"] == got["loss"] == torch.float32  # master weights
    assert got["Linear out"] == got["logits"] == low
    assert got["LayerNorm out"] == torch.float32  # its input, the residual stream, is float32
    assert got["LayerNorm(low)"] == got["softmax(low)"] == low  # the CPU keeps the low dtype


def test_float32_table_is_all_float32_and_leaves_no_gradients():
    model = tiny_gpt()
    got = P.autocast_dtypes(model, *batch(), "float32", "cpu")
    assert set(got.values()) == {torch.float32}
    assert all(p.grad is None for p in model.parameters())


def test_low_precision_saves_less_for_backward():
    model, (x, y) = tiny_gpt(), batch()
    fp32 = P.saved_activation_bytes(model, x, y, "float32", "cpu")
    bf16 = P.saved_activation_bytes(model, x, y, "bfloat16", "cpu")
    assert 0 < bf16 < fp32


def test_tokens_per_second_is_measured():
    model, (x, y) = tiny_gpt(), batch()
    assert P.train_tokens_per_s(model, x, y, "bfloat16", steps=1, warmup=0) > 0
    with pytest.raises(ValueError, match="steps"):
        P.train_tokens_per_s(model, x, y, "float32", steps=0)


# ---- float16 training with loss scaling, through minillm.train ----------------------------------


def test_float16_on_cpu_trains_with_the_scaler(tmp_path):
    tokens = counting_tokens()
    result = train(
        config(tmp_path, dtype="float16", max_steps=6),
        model=tiny_gpt(),
        train_tokens=tokens[:2500],
        val_tokens=tokens[2500:],
    )
    losses = result.train_losses
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert result.model.lm_head.weight.dtype == torch.float32
    assert load_checkpoint(result.out_dir / CHECKPOINT_NAME).scaler_state["scale"] == 2.0**16


def test_an_overflow_step_is_skipped_and_the_scale_halves(tmp_path):
    tokens = counting_tokens()
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # an infinite gradient on one weight, as an overflow in the backward pass would make
    model.lm_head.weight.register_hook(lambda grad: grad * float("inf"))
    result = train(
        config(tmp_path, dtype="float16", max_steps=1),
        model=model,
        train_tokens=tokens[:2500],
        val_tokens=tokens[2500:],
    )
    after = result.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the step was not skipped"
    assert result.step == 1
    assert load_checkpoint(result.out_dir / CHECKPOINT_NAME).scaler_state["scale"] == 2.0**15


def test_a_tiny_gradient_underflows_in_float16_and_survives_scaled():
    x, y = batch()

    def zero_fraction(dtype: str, init_scale: float) -> float:
        model = tiny_gpt()
        scaler = P.make_grad_scaler(dtype, "cpu", init_scale=init_scale)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        with P.autocast_context(dtype, "cpu"):
            _, loss = model(x, y)
        scaler.scale(loss * 1e-8).backward()  # every gradient about 1e-8 or smaller
        scaler.unscale_(optimizer)
        grad = model.transformer.h[0].mlp.c_fc.weight.grad
        return (grad == 0).float().mean().item()

    assert zero_fraction("float32", 1.0) < 0.05
    assert zero_fraction("float16", 1.0) > 0.9  # unscaled: flushed to zero
    assert zero_fraction("float16", 2.0**16) < 0.05  # scaled by 2^16: kept


# ---- torch.compile and the id check ---------------------------------------------------------


def test_compile_fullgraph_succeeds_on_the_training_forward():
    torch._dynamo.reset()
    model = tiny_gpt().train()
    x, y = batch()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # a graph break raises
    with P.autocast_context("bfloat16", "cpu"):
        logits, loss = compiled(x, y)
    loss.backward()
    with torch.no_grad():
        want = model(x, y)[1]
    assert logits.shape == (4, BLOCK, VOCAB) and math.isfinite(loss.item())
    assert model.lm_head.weight.grad is not None
    assert math.isclose(loss.item(), want.item(), rel_tol=0.05)  # bf16 against float32


def test_eager_forward_still_names_a_bad_id():
    model = tiny_gpt()
    with pytest.raises(ValueError, match=f"token id {VOCAB} is outside the vocabulary"):
        model(torch.tensor([[1, VOCAB]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 2]]))


def test_compiled_training_checks_the_data_ids_first(tmp_path):
    tokens = counting_tokens()
    tokens[100] = VOCAB + 5
    with pytest.raises(ValueError, match=f"token id {VOCAB + 5} of the data"):
        train(
            config(tmp_path, compile=True),
            model=tiny_gpt(),
            train_tokens=tokens[:2500],
            val_tokens=tokens[2500:],
        )
