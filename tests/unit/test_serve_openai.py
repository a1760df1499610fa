"""minillm.serve over real HTTP on 127.0.0.1, driven by the official ``openai`` client."""

from __future__ import annotations

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.serve import ServerThread, create_app  # noqa: E402
from minillm.tokenizer import BPETokenizer  # noqa: E402

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. "


@pytest.fixture(scope="module")
def server():
    tokenizer = BPETokenizer.train(TEXT * 8, 300, special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32
    )
    model = GPT(config).eval()
    with ServerThread(create_app(model, tokenizer, n_slots=4)) as running:  # a free port
        yield running
    assert not running.thread.is_alive(), "the server thread did not stop"


@pytest.fixture(scope="module")
def client(server):
    # max_retries=0: a retry would hide a lost request
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["minillm"]


def test_completions_plain_and_streamed(client):
    plain = client.completions.create(model="minillm", prompt="To be", max_tokens=8, temperature=0)
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= 8
    pieces = client.completions.create(
        model="minillm", prompt="To be", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in pieces) == plain.choices[0].text


def test_chat_plain_and_streamed_with_usage(client):
    messages = [{"role": "user", "content": "To be?"}]
    plain = client.chat.completions.create(
        model="minillm", messages=messages, max_tokens=6, temperature=0, seed=1
    )
    assert plain.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(
        model="minillm",
        messages=messages,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_sampling_options_n_seed_top_p_stop(client):
    def ask(**extra):
        result = client.completions.create(model="minillm", prompt="not", max_tokens=10, **extra)
        return [c.text for c in result.choices]

    assert ask(n=2, seed=5, temperature=1.0, top_p=0.9) == ask(
        n=2, seed=5, temperature=1.0, top_p=0.9
    )
    greedy = ask(temperature=0)[0]
    if len(greedy) > 3:
        assert ask(temperature=0, stop=[greedy[2:4]])[0] == greedy.split(greedy[2:4])[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        (dict(model="nope"), "NotFoundError", "model"),
        (dict(max_tokens=-3), "BadRequestError", "max_tokens"),
        (
            dict(temperature=-1),
            "BadRequestError",
            "temperature",
        ),  # NaN: test_serve.py (the client cannot send it)
        (dict(temperature=2.5), "BadRequestError", "temperature"),
        (dict(max_tokens=10_000), "BadRequestError", "max_tokens"),
        (dict(prompt="a " * 90), "BadRequestError", "prompt"),
        (dict(top_p="high"), "BadRequestError", "top_p"),
    ],
)
def test_errors_raise_the_clients_exceptions(client, kwargs, error, param):
    args = {"model": "minillm", "prompt": "To be", "max_tokens": 4, **kwargs}
    with pytest.raises(getattr(openai, error)) as caught:
        client.completions.create(**args)
    assert caught.value.param == param and caught.value.code


def test_empty_messages_raise_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="minillm", messages=[])
    assert caught.value.param == "messages"


def test_concurrent_streams_all_complete(client):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        stream = client.completions.create(
            model="minillm", prompt="To", max_tokens=6, temperature=0.8, seed=i, stream=True
        )
        return [c.choices[0].finish_reason for c in stream][-1]

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(one, range(16), timeout=120))
    assert all(r in ("stop", "length") for r in reasons)


def test_oversized_body_and_full_queue_raise_the_clients_exceptions():
    tokenizer = BPETokenizer.train(TEXT * 8, 300, special_tokens=["<|endoftext|>"])
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32
    )
    app = create_app(GPT(config).eval(), tokenizer, max_body_bytes=400, max_queue=0)
    with ServerThread(app) as small:
        client = openai.OpenAI(base_url=f"{small.url}/v1", api_key="x", max_retries=0, timeout=30)
        with pytest.raises(openai.APIStatusError) as caught:
            client.completions.create(model="minillm", prompt="x" * 1000, max_tokens=2)
        assert caught.value.status_code == 413 and caught.value.code == "body_too_large"
        with pytest.raises(openai.RateLimitError) as caught:
            client.completions.create(model="minillm", prompt="To be", max_tokens=2)
        assert caught.value.code == "queue_full"
        assert caught.value.response.headers["retry-after"] == "1"
