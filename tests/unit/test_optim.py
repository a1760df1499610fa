"""minillm.train.optim: the written-out AdamW equals torch.optim.AdamW."""

from __future__ import annotations

import pytest
import torch

from minillm.train import WrittenOutAdamW, adamw_update


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    twin.load_state_dict(net.state_dict())
    return net, twin


@pytest.mark.parametrize("implementation", ["for-loop", "foreach", "fused"])
def test_written_out_adamw_equals_torch_over_1000_steps(implementation):
    ours, theirs = _pair()
    settings = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    flags = {
        "for-loop": dict(foreach=False),
        "foreach": dict(foreach=True),
        "fused": dict(fused=True),
    }
    reference = torch.optim.AdamW(theirs.parameters(), **settings, **flags[implementation])
    written = WrittenOutAdamW(ours.parameters(), **settings)
    data = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(1000):
        x = torch.randn(32, 8, generator=data)
        target = torch.randn(32, 4, generator=data)
        for net, optimizer in ((ours, written), (theirs, reference)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(net(x), target).backward()
            optimizer.step()
        worst = max(
            worst,
            max(
                (a - b).abs().max().item()
                for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
            ),
        )
    assert worst <= 1e-6, f"weights drifted {worst:.2e} from torch's AdamW ({implementation})"
    moved = max(
        (a - b).abs().max().item()
        for a, b in zip(ours.parameters(), _pair()[0].parameters(), strict=True)
    )
    assert moved > 1e-2, f"the weights barely moved ({moved}); the comparison proves nothing"


def test_one_update_matches_the_formula_by_hand():
    p = torch.tensor([1.0, -2.0])
    g = torch.tensor([0.5, 0.25])
    m, v = torch.zeros(2), torch.zeros(2)
    adamw_update(p, g, m, v, 1, lr=0.1, beta1=0.9, beta2=0.99, eps=0.0, weight_decay=0.5)
    # step 1: bias-corrected m and v are g and g², so the step is lr * sign(g)
    expected = torch.tensor([1.0, -2.0]) * (1 - 0.1 * 0.5) - 0.1 * torch.sign(g)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(m, 0.1 * g)
    torch.testing.assert_close(v, 0.01 * g * g)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="step counts from 1"):
        adamw_update(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), 0, lr=1.0)
    with pytest.raises(ValueError, match="lr must be"):
        WrittenOutAdamW([torch.zeros(1, requires_grad=True)], lr=float("nan"))
    with pytest.raises(ValueError, match="at least one parameter"):
        WrittenOutAdamW([], lr=1e-3)
