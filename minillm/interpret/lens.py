"""The residual stream and the logit lens (lesson 13): what each layer would predict if the
model stopped there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.interpret.hooks import _as_batch, _forward_hooks, _logits, _stream_modules

__all__ = ["residual_stream", "logit_lens", "lens_scores"]


def residual_stream(model: nn.Module, idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream after the embeddings and after each block.

    Returns:
        ``(stream, logits)``: stream (n_layer + 1, batch, time, n_embd), entry 0 the embeddings
        (token plus position), entry ``l`` the output of block ``l``; logits of the same pass.
    """
    idx = _as_batch(idx)
    modules = _stream_modules(model)
    states: list[torch.Tensor | None] = [None] * len(modules)

    def hook_for(i: int) -> Callable[..., None]:
        def record(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            states[i] = output

        return record

    with _forward_hooks([(m, hook_for(i)) for i, m in enumerate(modules)]):
        logits = _logits(model, idx)
    return torch.stack(states), logits  # type: ignore[arg-type]


def logit_lens(model: nn.Module, idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every layer's residual stream out as next-token logits (nostalgebraist, 2020).

    ``lens_l = W_U · norm_f(h_l)``: the final norm and the output matrix applied to the stream
    after layer ``l`` as if the remaining blocks were skipped. The last entry is the model's own
    output.

    Returns:
        ``(lens, logits)``: lens (n_layer + 1, batch, time, vocab), logits (batch, time, vocab).
    """
    stream, logits = residual_stream(model, idx)
    return model.lm_head(model.transformer.ln_f(stream)), logits


@torch.no_grad()
def lens_scores(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> dict[str, Any]:
    """Score the logit lens of every layer as a next-token predictor.

    Args:
        model: the GPT.
        windows: (n, T + 1) token ids; the first ``T`` are read, the last ``T`` are the targets.
        batch_size: windows per forward pass.

    Returns:
        A dict: ``nll_sum``, the summed cross-entropy in nats of each read-out (n_layer + 1
        numbers, layer 0 the embeddings); ``correct``, its top-1 hits; ``tokens``, the number of
        targets scored (numpy arrays).
    """
    windows = _as_batch(windows)
    if windows.shape[1] < 2:
        raise ValueError(
            f"windows need at least 2 tokens (input and target), got {windows.shape[1]}"
        )
    nll_sum = correct = None
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        lens, _ = logit_lens(model, chunk[:, :-1])
        targets = chunk[:, 1:].expand(lens.shape[0], -1, -1)  # (L + 1, B, T)
        nll = F.cross_entropy(lens.flatten(0, 2).float(), targets.flatten(), reduction="none")
        nll = nll.view(targets.shape).sum((1, 2))
        hits = (lens.argmax(-1) == targets).sum((1, 2))
        nll_sum = nll if nll_sum is None else nll_sum + nll
        correct = hits if correct is None else correct + hits
    return {
        "nll_sum": nll_sum.double().numpy(),
        "correct": correct.numpy(),
        "tokens": int(windows[:, 1:].numel()),
    }
