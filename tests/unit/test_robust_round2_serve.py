"""Issue 27, class 4: the server answers 4xx, never 500, and works only for clients still there.

Extreme but valid sampling values and pathological JSON (deep nesting, NaN, huge integers) get a
4xx or a normal answer; ``minillm serve`` refuses a tokenizer from another run and a busy port
with one line (and never says "serving on" first); a non-streamed request whose client left is
cancelled.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from minillm import cli  # noqa: E402
from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.serve import ServerThread, create_app  # noqa: E402
from minillm.serve.api import APIError, parse_body, parse_request  # noqa: E402
from minillm.serve.generation import (  # noqa: E402
    SamplingParams,
    apply_processors,
    choose_next,
    make_processors,  # noqa: E402
)
from minillm.tokenizer import BPETokenizer  # noqa: E402
from minillm.train import save_checkpoint  # noqa: E402

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. "


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT * 8, 300, special_tokens=["<|endoftext|>"])


def _model(tokenizer, block: int = 64) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=block, n_layer=1, n_head=2, n_embd=32
    )
    return GPT(config).eval()


@pytest.fixture(scope="module")
def server(tokenizer):
    with ServerThread(create_app(_model(tokenizer), tokenizer, n_slots=2)) as running:
        yield running


def _post(url: str, raw: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/v1/completions", data=raw, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


BASE = '{"model": "minillm", "prompt": "To be", "max_tokens": 4, %s}'
PATHOLOGICAL = {
    "temperature tiny": BASE % '"temperature": 1e-308',
    "temperature subnormal": BASE % '"temperature": 5e-324',
    "temperature huge": BASE % '"temperature": 1e308',
    "top_p tiny": BASE % '"top_p": 5e-324',
    "min_p one": BASE % '"min_p": 1.0',
    "top_k huge": BASE % '"top_k": 100000000000000000000000',
    "max_tokens huge": BASE % '"max_tokens": 99999999999999999999999999',
    "n huge": BASE % '"n": 99999999999999999999',
    "seed huge": BASE % '"seed": 999999999999999999999999999999',
    "NaN token": BASE % '"temperature": NaN',
    "Infinity token": BASE % '"top_p": -Infinity',
    "integer of 5000 digits": BASE % ('"seed": ' + "9" * 5000),
    "nested arrays": '{"model": "minillm", "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "nested objects": BASE % ('"stop": ' + '{"a":' * 50_000 + "1" + "}" * 50_000),
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_requests_never_get_a_500(server, name):
    status, body = _post(server.url, PATHOLOGICAL[name].encode())
    assert status < 500, (status, body)
    assert status == 200 or "error" in body


@settings(max_examples=60, deadline=None)
@given(
    temperature=st.one_of(st.just(0.0), st.floats(5e-324, 2.0)),
    top_p=st.floats(0.0, 1.0),
    min_p=st.floats(0.0, 1.0),
    top_k=st.one_of(st.none(), st.integers(1, 10**30)),
    repetition_penalty=st.floats(0.01, 10.0),
)
def test_every_accepted_sampling_setting_picks_a_token(
    temperature, top_p, min_p, top_k, repetition_penalty
):
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        min_p=min_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
    )
    logits = torch.randn(2, 50) * 30
    history = torch.randint(0, 50, (2, 7))
    scores = apply_processors(make_processors(params), history, logits)
    token = choose_next(scores, params.greedy, torch.Generator().manual_seed(0))
    assert token.shape == (2, 1) and bool(((token >= 0) & (token < 50)).all())


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=12,
    )
)
def test_any_json_value_in_any_field_is_a_4xx_or_accepted(tokenizer, value):
    for name in ("prompt", "temperature", "top_p", "top_k", "max_tokens", "n", "stop", "seed"):
        body = {"model": "minillm", "prompt": "To be", "max_tokens": 2, name: value}
        try:
            raw = json.dumps(body).encode()
            parse_request(
                parse_body(raw),
                chat=False,
                tokenizer=tokenizer,
                model_name="minillm",
                block_size=64,
            )
        except APIError as err:
            assert 400 <= err.status < 500


def test_a_non_streamed_request_is_cancelled_when_its_client_leaves():
    plain = BPETokenizer.train(TEXT * 8, 300, special_tokens=[])  # no end-of-text: no early stop
    with ServerThread(create_app(_model(plain, block=8192), plain, n_slots=1)) as running:
        host, port = running.url.removeprefix("http://").split(":")
        body = json.dumps({"model": "minillm", "prompt": "To be", "max_tokens": 8000}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert _wait_for(running.url, lambda n: n == 1), "the request never started"
        # the client has gone: its generation must stop within a few engine steps
        assert _wait_for(running.url, lambda n: n == 0), "it went on generating for nobody"


def _running(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("minillm_running "):
                return int(float(line.split()[1]))
    raise AssertionError("no minillm_running gauge")


def _wait_for(url: str, condition, timeout: float = 3.0) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if condition(_running(url)):
            return True
        time.sleep(0.05)
    return False


def _run(tmp_path, tokenizer) -> str:
    run = tmp_path / "run"
    save_checkpoint(
        run / "checkpoint.safetensors",
        _model(tokenizer),
        step=0,
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    tokenizer.save(run / "tokenizer.bpe")
    return str(run)


def test_serve_refuses_a_tokenizer_from_another_run(tmp_path, tokenizer, capsys):
    run = _run(tmp_path, tokenizer)
    other = BPETokenizer.train("the quick brown fox jumps over the lazy dog " * 30, 300)
    other.save(tmp_path / "other.bpe")
    args = ["serve", "--checkpoint", run, "--tokenizer", str(tmp_path / "other.bpe"), "--port", "0"]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert "serving on" not in captured.out
    err = captured.err.strip()
    assert err.startswith("error:") and "\n" not in err and "fingerprint" in err


def test_serve_on_a_busy_port_is_one_line_and_no_banner(tmp_path, tokenizer, capsys):
    run = _run(tmp_path, tokenizer)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--checkpoint", run, "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert "serving on" not in captured.out
    err = captured.err.strip()
    assert err.startswith("error:") and "\n" not in err and "in use" in err, err
    for bad in ("70000", "-1", "http"):
        assert cli.main(["serve", "--checkpoint", run, "--port", bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
