"""The chat page at ``/`` in headless Chromium: a message typed, a streamed answer shown.

The server runs in-process on a free loopback port. Chromium is driven over the DevTools
protocol (``websocket-client``): the text is typed with ``Input.insertText``, Enter is pressed
with ``Input.dispatchKeyEvent``, and a MutationObserver records every state of the answer line,
so the test sees the answer grow piece by piece, not only its final text.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it).
This test installs nothing: without the browser it fails and says how to install it, unless
MINILLM_SKIP_BROWSER=1 is set, as ``tests/unit/test_book_render.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import build_book  # noqa: E402  (scripts/, on the path via tests/conftest.py)

from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.serve import ServerThread, create_app  # noqa: E402
from minillm.tokenizer import BPETokenizer  # noqa: E402

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. "
TYPED = "To be or not"


def need_browser():
    """The Chromium executable and the websocket module, or a failure saying how to get them."""
    missing = []
    executable = build_book.chromium()
    if executable is None:
        missing.append(build_book.BROWSER_HINT)
    try:
        import websocket
    except ImportError:
        websocket = None
        missing.append("pip install websocket-client")
    if missing:
        if os.environ.get("MINILLM_SKIP_BROWSER") == "1":
            pytest.skip("MINILLM_SKIP_BROWSER=1: headless Chromium checks skipped on request")
        pytest.fail(
            "the chat-page test drives headless Chromium: "
            + "; ".join(missing)
            + " (or set MINILLM_SKIP_BROWSER=1 to skip this check)"
        )
    return executable, websocket


class SlowHead(torch.nn.Module):
    """The output layer, 10 ms slower per call, so a short answer still arrives in many pieces."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return self.head(x)


@pytest.fixture(scope="module")
def server():
    tokenizer = BPETokenizer.train(TEXT * 8, 300, special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=32
    )
    model = GPT(config).eval()
    model.lm_head = SlowHead(model.lm_head)
    with ServerThread(create_app(model, tokenizer, n_slots=2)) as running:
        yield running


class DevTools:
    """A minimal Chrome DevTools protocol client for one page."""

    def __init__(self, websocket_module, url: str) -> None:
        self.ws = websocket_module.create_connection(url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"expected {expression!r} to become true within {timeout} s")

    def close(self) -> None:
        self.ws.close()


def page_socket(port_file: Path, timeout: float = 60.0) -> str:
    """The DevTools websocket URL of the browser's first page (Chromium writes its port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise AssertionError(f"Chromium did not open its DevTools port within {timeout} s")


@pytest.mark.slow
def test_a_typed_message_gets_a_streamed_answer(server):
    executable, websocket_module = need_browser()
    with tempfile.TemporaryDirectory(prefix="minillm-chat-") as profile:
        browser = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            tools = DevTools(websocket_module, page_socket(Path(profile) / "DevToolsActivePort"))
            try:
                seen = run_chat(tools, f"{server.url}/")
            finally:
                tools.close()
        finally:
            browser.terminate()
            browser.wait(timeout=30)
    messages = seen["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"], messages
    assert messages[0]["content"] == TYPED, f"expected the typed {TYPED!r}, got {messages[0]}"
    answer = messages[1]["content"]
    assert answer, "expected a non-empty answer from the model, got ''"
    assert seen["lines"] == [f"USER: {TYPED}", f"ASSISTANT: {answer}"], seen["lines"]
    states = [s for s in dict.fromkeys(seen["states"]) if s.removeprefix("ASSISTANT: ")]
    assert len(states) >= 2, f"expected the answer to grow in pieces, saw only {states}"
    assert all(f"ASSISTANT: {answer}".startswith(s) for s in states), states


def run_chat(tools: DevTools, url: str) -> dict:
    tools.call("Page.navigate", url=url)
    tools.wait_for("document.readyState === 'complete' && !!document.getElementById('message')")
    tools.evaluate(
        "window.__states = [];"
        "new MutationObserver(() => {"
        "  const a = document.querySelector('#log .assistant');"
        "  if (a) window.__states.push(a.textContent);"
        "}).observe(document.getElementById('log'),"
        "  {childList: true, subtree: true, characterData: true}); true"
    )
    tools.evaluate("document.getElementById('message').focus(); true")
    tools.call("Input.insertText", text=TYPED)
    for kind in ("keyDown", "keyUp"):
        tools.call(
            "Input.dispatchKeyEvent",
            type=kind,
            key="Enter",
            code="Enter",
            windowsVirtualKeyCode=13,
            nativeVirtualKeyCode=13,
            **({"text": "\r"} if kind == "keyDown" else {}),
        )
    tools.wait_for("messages.length === 2")  # the page adds the answer once the stream ends
    return tools.evaluate(
        "({messages: messages, states: window.__states,"
        " lines: Array.from(document.querySelectorAll('#log div')).map(d => d.textContent)})"
    )
