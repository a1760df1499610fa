"""minillm.serve.engine: continuous batching equals sequential generation; admission, retiring, cancel."""

from __future__ import annotations

import pytest
import torch

from minillm.model import GPT, GPTConfig
from minillm.serve import ContinuousBatcher, QueueFullError, Request, SamplingParams, generate


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=67, block_size=40, n_layer=2, n_head=4, n_embd=32, **overrides
    )
    return GPT(config).eval()


def alone(model: GPT, prompt: list[int], n: int) -> list[int]:
    return generate(model, torch.tensor([prompt]), n, temperature=0)[0, len(prompt) :].tolist()


@pytest.mark.parametrize(
    "overrides", [{}, {"pos_emb": "rope", "n_kv_head": 1}], ids=["gpt2", "rope-mqa"]
)
def test_continuous_batching_equals_sequential_greedy(overrides):
    model = tiny(**overrides)
    gen = torch.Generator().manual_seed(2)
    prompts = [
        torch.randint(0, 67, (int(n),), generator=gen).tolist() for n in (3, 9, 1, 5, 14, 2, 7)
    ]
    lengths = [12, 3, 20, 7, 1, 15, 9]
    requests = [
        Request(p, SamplingParams(temperature=0.0, max_tokens=n))
        for p, n in zip(prompts, lengths, strict=True)
    ]
    batcher = ContinuousBatcher(model, n_slots=3)
    batcher.run(requests)
    for request, n in zip(requests, lengths, strict=True):
        assert request.tokens == alone(model, request.prompt, n), f"request {request.prompt}"
        assert request.finish_reason == "length"
    # 7 requests through 3 slots: the running batch is full while requests wait, and slots freed
    # by short requests were refilled mid-run rather than after the whole batch.
    assert max(batcher.batch_sizes) == 3
    assert len(batcher.batch_sizes) < sum(lengths)
    assert batcher.idle and not batcher.cache.valid.any()


def test_requests_admitted_while_others_run_are_unaffected():
    model = tiny()
    batcher = ContinuousBatcher(model, n_slots=4)
    first = batcher.add(Request([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=10)))
    for _ in range(4):
        batcher.step()
    late = batcher.add(Request([9, 8], SamplingParams(temperature=0.0, max_tokens=6)))
    for _ in range(30):
        if batcher.idle:
            break
        batcher.step()
    assert first.tokens == alone(model, [1, 2, 3], 10)
    assert late.tokens == alone(model, [9, 8], 6)
    assert batcher.batch_sizes[:4] == [1, 1, 1, 1] and 2 in batcher.batch_sizes


def test_seeded_sampling_in_the_batch_repeats():
    model = tiny()

    def run(seed: int) -> list[list[int]]:
        params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=8, seed=seed)
        reqs = [Request([1, 2], params), Request([3, 4, 5], params)]
        return [r.tokens for r in ContinuousBatcher(model, n_slots=2).run(reqs)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_eos_stop_callback_and_cancel_free_the_slot():
    model = tiny()
    greedy = alone(model, [5, 6], 8)
    batcher = ContinuousBatcher(model, n_slots=2)
    eos = Request([5, 6], SamplingParams(temperature=0.0, max_tokens=8), eos_id=greedy[2])
    stopper = Request([5, 6], SamplingParams(temperature=0.0, max_tokens=8))
    stopper.on_token = lambda request, token: len(request.tokens) < 4
    batcher.run([eos, stopper])
    assert eos.tokens == greedy[: greedy.index(greedy[2]) + 1] and eos.finish_reason == "stop"
    assert stopper.tokens == greedy[:4] and stopper.finish_reason == "stop"
    finished = []
    victim = Request([1], SamplingParams(temperature=0.0, max_tokens=30))
    victim.on_finish = finished.append
    batcher.add(victim)
    batcher.step()
    victim.cancel()
    batcher.step()  # one decoding step later the slot is free
    assert victim.finish_reason == "cancelled" and finished == [victim] and batcher.idle


def test_context_is_never_exceeded_and_bad_requests_are_refused():
    model = tiny()
    batcher = ContinuousBatcher(model, n_slots=1, max_queue=1)
    with pytest.raises(ValueError, match="context length 40"):
        batcher.add(Request([1] * 35, SamplingParams(max_tokens=6)))
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        batcher.add(Request([1], SamplingParams(max_tokens=0)))
    with pytest.raises(ValueError, match="ids in 0..66"):
        batcher.add(Request([70], SamplingParams(max_tokens=1)))
    full = batcher.add(Request([1] * 34, SamplingParams(temperature=0.0, max_tokens=6)))
    with pytest.raises(QueueFullError):
        batcher.add(Request([1], SamplingParams(max_tokens=1)))
    batcher.run([], max_steps=10)
    assert batcher.idle and len(full.tokens) == 6 and full.finish_reason == "length"
