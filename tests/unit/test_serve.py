"""minillm.serve in-process (FastAPI TestClient): the OpenAI formats, streaming, errors, limits."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.serve import (
    chat_prompt,  # noqa: E402
    create_app,  # noqa: E402
    generate,  # noqa: E402
)
from minillm.tokenizer import BPETokenizer  # noqa: E402

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. Ünïcödé ✓ "


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT * 8, 300, special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32
    )
    return GPT(config).eval()


@pytest.fixture(scope="module")
def client(model, tokenizer):
    with TestClient(create_app(model, tokenizer, n_slots=4)) as test_client:
        yield test_client


def greedy_text(model, tokenizer, prompt: str, n: int) -> str:
    ids = tokenizer.encode(prompt)
    out = generate(model, torch.tensor([ids]), n, temperature=0)[0, len(ids) :].tolist()
    eot = tokenizer.eot_id
    out = out[: out.index(eot)] if eot in out else out
    return tokenizer.decode_bytes(out).decode("utf-8", errors="replace")


def sse_events(text: str) -> list:
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), blocks
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(b[len("data: ") :]) for b in blocks[:-1]]


def post(client, path: str, **body):
    return client.post(path, json={"model": "minillm", **body})


# ---- the happy paths --------------------------------------------------------------------------


def test_models_health_metrics_and_page(client):
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["minillm"]
    assert "<form" in client.get("/").text
    post(client, "/v1/completions", prompt="To be", max_tokens=2)
    metrics = client.get("/metrics").text
    assert 'minillm_requests_total{path="/v1/completions",status="200"}' in metrics
    assert "minillm_batch_size_bucket" in metrics and "minillm_queue_depth 0" in metrics


def test_greedy_completion_equals_generate(client, model, tokenizer):
    body = post(client, "/v1/completions", prompt="To be", max_tokens=9, temperature=0).json()
    (choice,) = body["choices"]
    assert choice["text"] == greedy_text(model, tokenizer, "To be", 9)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["usage"]["prompt_tokens"] == len(tokenizer.encode("To be"))
    assert choice["finish_reason"] in ("length", "stop")


def test_chat_completion_uses_the_template(client, model, tokenizer):
    messages = [{"role": "user", "content": "Whether 'tis nobler?"}]
    body = post(client, "/v1/chat/completions", messages=messages, max_tokens=6, temperature=0)
    (choice,) = body.json()["choices"]
    assert choice["message"]["role"] == "assistant"
    expected = greedy_text(model, tokenizer, chat_prompt(messages), 6).split("\n\nUSER:")[0]
    assert choice["message"]["content"] == expected


def test_streamed_text_equals_the_non_streamed_text(client):
    args = dict(prompt="the question", max_tokens=12, temperature=0)
    whole = post(client, "/v1/completions", **args).json()["choices"][0]
    response = post(client, "/v1/completions", stream=True, **args)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert "".join(e["choices"][0]["text"] for e in events) == whole["text"]
    assert events[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]


def test_chat_stream_with_usage_and_n(client):
    messages = [{"role": "user", "content": "hello"}]
    response = post(
        client,
        "/v1/chat/completions",
        messages=messages,
        max_tokens=5,
        n=2,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = sse_events(response.text)
    usage = events[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 10
    finishes = {e["choices"][0]["index"] for e in events[:-1] if e["choices"][0]["finish_reason"]}
    assert finishes == {0, 1}
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"


def test_seed_repeats_n_differs_and_stop_cuts(client):
    def texts(**extra):
        body = post(client, "/v1/completions", prompt="not", max_tokens=10, **extra)
        return [c["text"] for c in body.json()["choices"]]

    first = texts(seed=11, n=3, temperature=1.0)
    assert first == texts(seed=11, n=3, temperature=1.0)
    assert len(set(first)) > 1  # each choice has its own seed
    greedy = texts(temperature=0)[0]
    cut = greedy[3:5] if len(greedy) >= 5 else greedy[-1:]
    stopped = post(
        client, "/v1/completions", prompt="not", max_tokens=10, temperature=0, stop=[cut]
    )
    (choice,) = stopped.json()["choices"]
    assert choice["text"] == greedy.split(cut)[0] and choice["finish_reason"] == "stop"


def test_special_token_text_in_a_prompt_is_plain_text(client, tokenizer):
    response = post(client, "/v1/completions", prompt="a <|endoftext|> b", max_tokens=2)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == len(
        tokenizer.encode_ordinary("a <|endoftext|> b")
    )


def test_top_p_zero_is_greedy(client):
    args = dict(prompt="To be", max_tokens=6)
    greedy = post(client, "/v1/completions", temperature=0, **args).json()["choices"][0]["text"]
    top = post(client, "/v1/completions", temperature=1.5, top_p=0.0, seed=1, **args)
    assert top.json()["choices"][0]["text"] == greedy


# ---- errors --------------------------------------------------------------------------------

BAD = [
    ({"model": "gpt-4o", "prompt": "a"}, 404, "model", "model_not_found"),
    ({"prompt": "a"}, 400, "model", "invalid_type"),
    ({"model": "minillm", "prompt": "a", "max_tokens": -1}, 400, "max_tokens", "invalid_value"),
    (
        {"model": "minillm", "prompt": "a", "max_tokens": 1000},
        400,
        "max_tokens",
        "context_length_exceeded",
    ),
    ({"model": "minillm", "prompt": "a", "max_tokens": "5"}, 400, "max_tokens", "invalid_type"),
    ({"model": "minillm", "prompt": "a", "temperature": 2.5}, 400, "temperature", "invalid_value"),
    ({"model": "minillm", "prompt": "a", "temperature": "hot"}, 400, "temperature", "invalid_type"),
    ({"model": "minillm", "prompt": "a", "top_p": 1.1}, 400, "top_p", "invalid_value"),
    ({"model": "minillm", "prompt": "a", "n": 0}, 400, "n", "invalid_value"),
    ({"model": "minillm", "prompt": "a", "stop": 5}, 400, "stop", "invalid_value"),
    ({"model": "minillm", "prompt": "a", "stream": "yes"}, 400, "stream", "invalid_type"),
    ({"model": "minillm", "prompt": 12}, 400, "prompt", "invalid_type"),
    ({"model": "minillm", "prompt": "a " * 80}, 400, "prompt", "context_length_exceeded"),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD, ids=[b[2] for b in BAD])
def test_bad_completion_requests(client, body, status, param, code):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("hi", "messages"),
        ([{"role": "king", "content": "x"}], "messages[0]"),
        ([{"role": "user", "content": 3}], "messages[0]"),
    ],
)
def test_bad_chat_messages(client, messages, param):
    response = post(client, "/v1/chat/completions", messages=messages)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b"",
        b'{"model": "minillm", "prompt": "a", "temperature": NaN}',
    ],
)
def test_malformed_json_is_400_not_422(client, raw):
    response = client.post(
        "/v1/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413_and_full_queue_is_429(model, tokenizer):
    with TestClient(create_app(model, tokenizer, max_body_bytes=200, max_queue=0)) as small:
        big = small.post("/v1/completions", json={"model": "minillm", "prompt": "x" * 500})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        busy = small.post("/v1/completions", json={"model": "minillm", "prompt": "x"})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"


def test_a_burst_of_bad_and_concurrent_requests_leaves_the_server_working(client, model, tokenizer):
    bodies = [b for b, *_ in BAD] + [
        {"model": "minillm", "prompt": "To be", "max_tokens": 4, "temperature": 0.5, "stream": s}
        for s in (True, False) * 4
    ]
    statuses: list[int] = []
    lock = threading.Lock()

    def send(body):
        status = client.post("/v1/completions", json=body).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == len(bodies) and max(statuses) < 500, sorted(statuses)
    assert statuses.count(200) == 8
    good = post(client, "/v1/completions", prompt="To be", max_tokens=5, temperature=0)
    assert good.json()["choices"][0]["text"] == greedy_text(model, tokenizer, "To be", 5)
    assert client.app.state.server.batcher.idle
    assert not math.isnan(float(client.get("/metrics").text.count("\n")))


def test_a_client_that_leaves_mid_stream_frees_its_slot(client):
    server = client.app.state.server
    body = {
        "model": "minillm",
        "prompt": "To",
        "max_tokens": 60,
        "temperature": 0.9,
        "stream": True,
    }
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"text": ""' not in line:
                break  # one piece of text, then hang up
    for _ in range(200):  # bounded wait: the engine frees it at its next step
        if server.batcher.idle:
            break
        threading.Event().wait(0.01)
    assert server.batcher.idle, "the abandoned request still holds a slot"


def test_serve_cli_registers_its_flags():
    import argparse

    from minillm.cli.serve import _serve_cli, add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--checkpoint", "runs/x", "--port", "9001", "--slots", "2"])
    assert (args.checkpoint, args.port, args.host, args.slots) == ("runs/x", 9001, "127.0.0.1", 2)
    assert args.handler is _serve_cli
