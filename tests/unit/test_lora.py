"""LoRA from scratch (minillm.finetune.lora) against Hugging Face peft on the same weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from minillm.finetune import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    count_parameters,
    load_adapter,
    lora_state_dict,
    merge_lora,
    save_adapter,
)
from minillm.model import GPT, GPTConfig

peft = pytest.importorskip("peft")
pytest.importorskip("transformers")


def tiny_gpt(seed: int = 0, pos_emb: str = "learned") -> GPT:
    """The course shape, tiny; with RoPE it exports as GPT-NeoX instead of GPT-2."""
    torch.manual_seed(seed)
    config = GPTConfig.preset(
        "course", n_layer=2, n_embd=32, n_head=2, vocab_size=64, block_size=16, pos_emb=pos_emb
    )
    return GPT(config).eval()


class Wrapper(nn.Module):
    """A plain module around one Linear, so peft wraps exactly the same nn.Linear as ours."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.proj = linear

    def forward(self, x):
        return self.proj(x)


def randomise_b(module: nn.Module, seed: int = 1) -> None:
    """B starts at zero; give it values so the adapter path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=gen) * 0.1)


def peft_pair(rslora: bool = False, r: int = 4, alpha: float = 8.0):
    torch.manual_seed(0)
    linear = nn.Linear(12, 7)
    ours = Wrapper(nn.Linear(12, 7))
    ours.proj.load_state_dict(linear.state_dict())
    apply_lora(ours, targets=["proj"], r=r, alpha=alpha, rslora=rslora)
    randomise_b(ours)
    theirs = peft.get_peft_model(
        Wrapper(linear),
        peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"], use_rslora=rslora),
    )
    layer = theirs.base_model.model.proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.proj.lora_A.weight)
        layer.lora_B["default"].weight.copy_(ours.proj.lora_B.weight)
    return ours, theirs


@pytest.mark.parametrize("rslora", [False, True])
def test_forward_and_gradients_equal_peft(rslora):
    ours, theirs = peft_pair(rslora=rslora)
    assert ours.proj.scaling == theirs.base_model.model.proj.scaling["default"]
    x = torch.randn(3, 5, 12)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-6, rtol=0)
    assert torch.equal(y_ours, y_theirs), "same operation order: results should be bitwise equal"
    (y_ours**2).sum().backward()
    (y_theirs**2).sum().backward()
    layer = theirs.base_model.model.proj
    torch.testing.assert_close(
        ours.proj.lora_A.weight.grad, layer.lora_A["default"].weight.grad, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        ours.proj.lora_B.weight.grad, layer.lora_B["default"].weight.grad, atol=1e-6, rtol=0
    )


def test_merge_equals_peft_merge_and_unload():
    ours, theirs = peft_pair()
    merged_theirs = theirs.merge_and_unload()
    merge_lora(ours)
    assert type(ours.proj) is nn.Linear
    torch.testing.assert_close(ours.proj.weight, merged_theirs.proj.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.proj.bias, merged_theirs.proj.bias, atol=0, rtol=0)


def test_output_at_initialisation_is_exactly_the_base_output():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (2, 10))
    before = model(idx)[0]
    apply_lora(model, targets=["c_attn", "c_fc"], r=4)
    assert torch.equal(model(idx)[0], before)


def test_trainable_parameter_count_equals_peft_on_the_hf_export():
    model = tiny_gpt()
    hf = model.to_hf()
    apply_lora(model, targets=["c_attn", "c_proj"], r=4, alpha=8)
    theirs = peft.get_peft_model(
        hf,
        peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True
        ),
    )
    trainable_theirs, _ = theirs.get_nb_trainable_parameters()
    assert count_parameters(model)[0] == trainable_theirs
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_saved_adapter_loads_in_peft_and_reproduces_the_logits(tmp_path, pos_emb):
    model = tiny_gpt(pos_emb=pos_emb)
    hf = model.to_hf()
    apply_lora(model, targets=["c_attn", "c_proj", "c_fc"], r=4, alpha=8)
    randomise_b(model)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    if pos_emb == "rope":  # GPT-NeoX names; q/k/v rows regrouped per head
        assert type(hf).__name__ == "GPTNeoXForCausalLM" and not config["fan_in_fan_out"]
        assert "gpt_neox.layers.0.attention.query_key_value" in config["target_modules"]
    loaded = peft.PeftModel.from_pretrained(hf, str(tmp_path)).eval()
    idx = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        ours = model(idx)[0]
        theirs = loaded(input_ids=idx).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # and back into a fresh minillm model
    again = load_adapter(tiny_gpt(pos_emb=pos_emb), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(idx)[0], ours, atol=0, rtol=0)


def test_adapter_is_small_next_to_the_course_sized_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("course")).eval()
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    apply_lora(model, targets=["c_attn"], r=8)
    save_adapter(model, tmp_path)
    assert (tmp_path / ADAPTER_WEIGHTS).stat().st_size <= 0.05 * base_bytes


def test_peft_adapter_loads_into_minillm(tmp_path):
    model = tiny_gpt()
    theirs = peft.get_peft_model(
        model.to_hf(),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True),
    )
    for name, param in theirs.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                param.normal_(0, 0.1)
    theirs.save_pretrained(str(tmp_path))
    ours = load_adapter(tiny_gpt(), tmp_path)
    idx = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], theirs(input_ids=idx).logits, atol=1e-5, rtol=0)


def test_gradient_flows_to_adapters_only():
    model = tiny_gpt()
    apply_lora(model, targets=["c_attn"], r=2)
    randomise_b(model)
    idx = torch.randint(0, 64, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    for name, param in model.named_parameters():
        if "lora_" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, f"{name} is frozen but got a gradient"


def test_scaling_and_rslora():
    assert LoRAConfig(r=4, alpha=8).scaling == 2.0
    assert LoRAConfig(r=4, alpha=8, rslora=True).scaling == 8 / math.sqrt(4)


def test_lora_state_dict_and_merge_round_trip():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (2, 8))
    apply_lora(model, targets=["c_attn"], r=2)
    randomise_b(model)
    assert set(lora_state_dict(model)) == {
        f"transformer.h.{i}.attn.c_attn.lora_{ab}.weight" for i in range(2) for ab in "AB"
    }
    with torch.no_grad():
        before = model(idx)[0]
        merge_lora(model)
        torch.testing.assert_close(model(idx)[0], before, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["nope"]}, "no module matches"),
        ({"targets": ["lm_head"]}, "weight tying"),
        ({"targets": ["ln_1"]}, "not an nn.Linear"),
        ({"r": 0}, "positive int"),
        ({"alpha": -1}, "positive number"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_input_is_rejected_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_lora(tiny_gpt(), **kwargs)


def test_double_apply_and_merge_without_adapters_are_rejected():
    model = apply_lora(tiny_gpt(), targets=["c_attn"])
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, targets=["c_fc"])
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(tiny_gpt())


# ---- trainable token rows (peft's trainable_token_indices) ------------------------------------

NEW_TOKENS = [61, 62, 63]


def test_trainable_tokens_train_the_new_rows_only_and_the_tied_head_reads_them():
    model = tiny_gpt()
    table_before = model.transformer.wte.weight.detach().clone()
    apply_lora(model, targets=["c_attn"], r=2, trainable_token_ids=NEW_TOKENS)
    idx = torch.tensor([[1, 61, 5, 62, 7, 63, 2, 9]])
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1
    )
    for _ in range(3):  # B starts at zero; later steps also train A
        _, loss = model(idx, idx.roll(-1, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    table = model.transformer.wte.weight.detach()
    old = [i for i in range(64) if i not in NEW_TOKENS]
    assert torch.equal(table[old], table_before[old]), "a frozen row of the embedding changed"
    moved = (table[NEW_TOKENS] - table_before[NEW_TOKENS]).abs().amax(1)
    assert bool((moved > 1e-3).all()), f"every new row should train, moved by {moved.tolist()}"
    assert model.transformer.wte.base.weight.grad is None
    # the tied output layer scores the trained rows: logits equal hidden @ table.T
    with torch.no_grad():
        hidden = model._hidden(idx, 0, None)
        torch.testing.assert_close(model(idx)[0], hidden @ table.T, atol=1e-6, rtol=0)


def test_trainable_tokens_are_a_no_op_at_initialisation_and_counted_as_peft_counts():
    model = tiny_gpt()
    hf = model.to_hf()
    idx = torch.randint(0, 64, (2, 10))
    before = model(idx)[0]
    apply_lora(model, targets=["c_attn"], r=4, alpha=8, trainable_token_ids=NEW_TOKENS)
    # the new rows' logits come from their own small matmul: equal up to rounding, not bitwise
    torch.testing.assert_close(model(idx)[0], before, atol=1e-6, rtol=0)
    theirs = peft.get_peft_model(
        hf,
        peft.LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["c_attn"],
            fan_in_fan_out=True,
            trainable_token_indices=NEW_TOKENS,
        ),
    )
    assert count_parameters(model)[0] == theirs.get_nb_trainable_parameters()[0]
    assert count_parameters(model)[0] == 2 * (4 * 32 + 4 * 96) + len(NEW_TOKENS) * 32


def trained_token_model(pos_emb: str = "learned"):
    model = tiny_gpt(pos_emb=pos_emb)
    apply_lora(model, targets=["c_attn", "c_fc"], r=4, alpha=8, trainable_token_ids=NEW_TOKENS)
    randomise_b(model)
    with torch.no_grad():
        model.transformer.wte.trainable_tokens_delta.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_saved_trainable_tokens_load_in_peft_and_back(tmp_path, pos_emb):
    hf = tiny_gpt(pos_emb=pos_emb).to_hf()
    model = trained_token_model(pos_emb)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["trainable_token_indices"] == NEW_TOKENS
    loaded = peft.PeftModel.from_pretrained(hf, str(tmp_path)).eval()
    idx = torch.tensor([[3, 61, 8, 62, 63, 11]])
    with torch.no_grad():
        ours = model(idx)[0]
        torch.testing.assert_close(ours, loaded(input_ids=idx).logits, atol=1e-5, rtol=0)
        again = load_adapter(tiny_gpt(pos_emb=pos_emb), tmp_path)
        torch.testing.assert_close(again(idx)[0], ours, atol=0, rtol=0)


def test_merge_writes_the_trained_rows_and_keeps_the_head_tied():
    model = trained_token_model()
    idx = torch.tensor([[3, 61, 8, 62, 63, 11]])
    with torch.no_grad():
        before = model(idx)[0]
        merge_lora(model)
        torch.testing.assert_close(model(idx)[0], before, atol=1e-5, rtol=1e-5)
    assert type(model.transformer.wte) is nn.Embedding
    assert model.lm_head.weight is model.transformer.wte.weight, "the output layer is untied"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trainable_token_ids": [64]}, "outside the embedding"),
        ({"trainable_token_ids": [3, 3]}, "duplicates"),
        ({"trainable_token_ids": [-1]}, "non-negative"),
        ({"trainable_token_ids": [3], "token_module": "transformer.h.0"}, "not an nn.Embedding"),
    ],
)
def test_bad_trainable_tokens_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_lora(tiny_gpt(), targets=["c_attn"], **kwargs)
