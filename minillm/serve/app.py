"""An OpenAI-compatible HTTP server for a minillm GPT (FastAPI + uvicorn).

Taught in lesson 11. :func:`create_app` builds the app: ``GET /v1/models``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (streamed as server-sent events ending
in ``data: [DONE]``, or not), ``GET /health``, ``GET /metrics`` (Prometheus text) and a small chat
page at ``/``. Every request is served by one continuous-batching engine
(:mod:`minillm.serve.engine`) on a worker thread, so the event loop never waits on the model; tokens
come back to the request's coroutine through an ``asyncio`` queue. Bad input gets OpenAI's error
shape (:mod:`minillm.serve.api`). The metrics and the JSON-lines request log are in
:mod:`minillm.serve.metrics`; a :class:`minillm.serve.monitor.DriftMonitor`, when given, scores every
prompt on its own thread and adds its drift gauges to ``/metrics``.

FastAPI and uvicorn are the ``serve`` extra: ``pip install -e '.[serve]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from minillm.serve.api import (
    PLAY_SCRIPT,
    TEMPLATE,
    APIError,
    ParsedRequest,
    chat_format_for,
    parse_body,
    parse_request,
)
from minillm.serve.engine import ContinuousBatcher, EngineThread, QueueFullError, Request
from minillm.serve.generation import TextStream
from minillm.serve.metrics import COMPLETION_PATHS, Metrics, RequestLog, RequestRecord
from minillm.utils.assets import asset_path

try:  # FastAPI reads the routes' annotations from this module's globals
    from fastapi import Request as HTTPRequest
except ImportError:  # the serve extra is missing: create_app says how to install it
    HTTPRequest = Any  # type: ignore[misc,assignment]

__all__ = ["create_app", "ServerThread"]

_EXTRA = "minillm.serve needs fastapi and uvicorn: pip install -e '.[serve]'"


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as err:
        raise ImportError(_EXTRA) from err
    return fastapi


# ---------------------------------------------------------------------------------------------
# From the engine thread to the request's coroutine
# ---------------------------------------------------------------------------------------------


class _Choices:
    """The ``n`` engine requests of one HTTP request, feeding (index, text, finish) events."""

    def __init__(self, parsed: ParsedRequest, tokenizer: Any, metrics: Metrics) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.metrics = metrics
        self.requests: list[Request] = []
        eos = parsed.eos_id
        if eos is None:
            eos = tokenizer.special_tokens.get("<|endoftext|>")
        for index in range(parsed.n):
            params = parsed.params
            if params.seed is not None and index:  # different choices, each repeatable
                params = type(params)(**{**vars(params), "seed": params.seed + index})
            stream = TextStream(tokenizer.token_bytes, params.stop)
            self.requests.append(
                Request(
                    list(parsed.prompt_ids),
                    params,
                    eos_id=eos,
                    on_token=self._on_token(index, stream, eos),
                    on_finish=self._on_finish(index, stream),
                )
            )

    def _put(self, event: tuple) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (shutting down)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def _on_token(self, index: int, stream: TextStream, eos: int | None) -> Any:
        def on_token(request: Request, token: int) -> bool:
            if token != eos:
                piece = stream.push(token)
                if piece:
                    self._put((index, piece, None))
            return not stream.stopped

        return on_token

    def _on_finish(self, index: int, stream: TextStream) -> Any:
        def on_finish(request: Request) -> None:
            self.metrics.finished(request)
            self._put((index, stream.finish(), request.finish_reason))

        return on_finish

    def cancel(self) -> None:
        for request in self.requests:
            request.cancel()

    async def events(self) -> AsyncIterator[tuple[int, str, str | None]]:
        remaining = len(self.requests)
        while remaining:
            event = await self.queue.get()
            remaining -= event[2] is not None
            yield event


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


async def _disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    """Return when the ASGI server reports that the client closed the connection."""
    while (await receive()).get("type") != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers at once must not make this spin


def _usage(choices: _Choices) -> dict[str, int]:
    prompt = len(choices.requests[0].prompt)
    completion = sum(len(r.tokens) for r in choices.requests)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(reason: str | None) -> str:
    if reason in ("cancelled", "error"):
        raise APIError(500, "the engine failed this request", type="server_error", code=reason)
    return reason or "stop"


def _choice(chat: bool, index: int, text: str, finish: str | None, *, delta: bool) -> dict:
    if not chat:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    key, body = ("delta", {"content": text}) if delta else ("message", {"content": text})
    if not delta:
        body["role"] = "assistant"
    return {"index": index, key: body, "logprobs": None, "finish_reason": finish}


class _Server:
    """State shared by the routes: the model, the engine and its thread, the metrics."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        n_slots: int,
        max_queue: int,
        monitor: Any = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.chat_format = chat_format_for(tokenizer)  # None: the base model's play script
        self.batcher = ContinuousBatcher(model, n_slots=n_slots, max_queue=max_queue)
        self.metrics = Metrics()
        self.monitor, self.request_log = monitor, request_log
        self.engine: EngineThread | None = None
        self.lock = threading.Lock()
        self.created = int(time.time())

    def ensure_engine(self) -> EngineThread:
        with self.lock:
            if self.engine is None or not self.engine.alive:
                self.engine = EngineThread(self.batcher).start()
            return self.engine

    def stop(self) -> None:
        with self.lock:
            if self.engine is not None:
                self.engine.stop()
                self.engine = None

    def submit(self, choices: _Choices) -> None:
        engine = self.ensure_engine()
        try:
            for request in choices.requests:
                engine.submit(request)
        except QueueFullError as err:
            choices.cancel()
            raise APIError(
                429,
                f"the server is busy ({err}); retry shortly",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None

    async def complete(
        self,
        raw: bytes,
        chat: bool,
        record: RequestRecord | None = None,
        receive: Callable[[], Awaitable[dict]] | None = None,
    ) -> Any:
        """Answer one completions request; ``receive`` (ASGI) reports the client leaving."""
        from fastapi.responses import JSONResponse, StreamingResponse

        parsed = parse_request(
            parse_body(raw),
            chat=chat,
            tokenizer=self.tokenizer,
            model_name=self.name,
            block_size=self.model.config.block_size,
            chat_format=self.chat_format,
        )
        choices = _Choices(parsed, self.tokenizer, self.metrics)
        self.submit(choices)
        if self.monitor is not None:
            self.monitor.submit(parsed.text)  # scored on the monitor's thread, never waited for
        meta = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            "created": int(time.time()),
            "model": self.name,
        }
        if record is not None:
            record.id, record.requests, record.stream = meta["id"], choices.requests, parsed.stream
            record.prompt = parsed.text
        if parsed.stream:
            events = _sse(choices, parsed, meta, record)
            return StreamingResponse(events, media_type="text/event-stream")
        texts, reasons = [""] * parsed.n, [None] * parsed.n

        async def collect() -> None:
            async for index, piece, finish in choices.events():
                texts[index] += piece
                reasons[index] = finish if finish is not None else reasons[index]

        collecting = asyncio.ensure_future(collect())
        # Nothing is sent before the end, so a client that leaves is only seen by listening for
        # its disconnect message: then cancel its generation at the engine's next step, as
        # streams do.
        leaving = asyncio.ensure_future(_disconnect(receive)) if receive is not None else None
        try:
            waiting = {collecting} if leaving is None else {collecting, leaving}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not collecting.done():
                raise APIError(
                    499, "the client closed the connection", code="client_closed_request"
                )
            collecting.result()
        finally:
            for task in (collecting, leaving):
                if task is not None:
                    task.cancel()
            choices.cancel()  # no-op when finished; frees the slots if the client has gone
        body = {
            **meta,
            "object": "chat.completion" if chat else "text_completion",
            "choices": [
                _choice(chat, i, texts[i], _finish_reason(reasons[i]), delta=False)
                for i in range(parsed.n)
            ],
            "usage": _usage(choices),
        }
        return JSONResponse(body)


async def _sse(
    choices: _Choices, parsed: ParsedRequest, meta: dict, record: RequestRecord | None
) -> AsyncIterator[str]:
    """Server-sent events: one chunk per text piece, one per finish, usage, then [DONE]."""
    chat = parsed.chat
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choice_list: list[dict], **extra: Any) -> str:
        return (
            "data: " + json.dumps({**meta, "object": obj, "choices": choice_list, **extra}) + "\n\n"
        )

    try:
        if chat:  # the first delta of each choice names the role
            for i in range(parsed.n):
                first = {"index": i, "delta": {"role": "assistant", "content": ""}}
                yield chunk([{**first, "logprobs": None, "finish_reason": None}])
        async for index, piece, finish in choices.events():
            if piece:
                yield chunk([_choice(chat, index, piece, None, delta=True)])
            if finish is not None:
                reason = "stop" if finish in ("cancelled", "error") else finish
                yield chunk([_choice(chat, index, "", reason, delta=True)])
        if parsed.include_usage:
            yield chunk([], usage=_usage(choices))
        yield "data: [DONE]\n\n"
    finally:
        choices.cancel()  # the client went away: free the slots at the engine's next step
        if record is not None:  # the status (200) was sent before the first event
            record.finish(200)


def create_app(
    model: Any,
    tokenizer: Any,
    *,
    model_name: str = "minillm",
    n_slots: int = 8,
    max_queue: int = 64,
    max_body_bytes: int = 1 << 20,
    request_log: str | Path | RequestLog | None = None,
    log_prompts: bool = False,
    monitor: Any = None,
) -> Any:
    """The FastAPI app serving ``model`` with ``tokenizer`` under the name ``model_name``.

    Args:
        n_slots: the continuous-batching engine's largest running batch.
        max_queue: waiting requests beyond this are refused with 429 and ``Retry-After``.
        max_body_bytes: larger request bodies are refused with 413.
        request_log: a file (or :class:`RequestLog`) getting one JSON line per completion request.
        log_prompts: the request log also records the prompt text (off: prompts may be private).
        monitor: a :class:`minillm.monitor.DriftMonitor` scoring every prompt in the background.

    ``/v1/chat/completions`` renders messages with lesson 08's chat template when the tokenizer
    has the chat tokens (a chat model, ``course_model("chat")``), else as a play script (the base
    model); ``/v1/models`` says which in each model's ``chat_format`` (``"chat-template"`` or
    ``"play-script"``).
    """
    fastapi = _fastapi()
    from contextlib import asynccontextmanager

    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

    if request_log is not None and not isinstance(request_log, RequestLog):
        request_log = RequestLog(request_log, include_prompts=log_prompts)
    server = _Server(model, tokenizer, model_name, n_slots, max_queue, monitor, request_log)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        server.ensure_engine()
        if monitor is not None:
            monitor.start()
        yield
        server.stop()
        if monitor is not None:
            monitor.stop()
        if server.request_log is not None:
            server.request_log.close()

    app = fastapi.FastAPI(title="minillm", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(APIError)
    async def api_error(request: Any, err: APIError) -> Any:
        request.state.error_code = err.code or err.type  # for the metrics and the request log
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Any, err: Exception) -> Any:  # never a bare 500 page
        request.state.error_code = "internal_error"
        error = APIError(500, f"internal error: {type(err).__name__}", type="server_error")
        return JSONResponse(error.body(), status_code=500)

    @app.middleware("http")
    async def count(request: Any, call_next: Any) -> Any:
        path, record = request.url.path, None
        if server.request_log is not None and path in COMPLETION_PATHS:
            record = request.state.record = RequestRecord(server.request_log, path)
        response = await call_next(request)
        error_code = getattr(request.state, "error_code", None)
        server.metrics.count_request(path, response.status_code, error_code)
        if record is not None and not (record.stream and response.status_code == 200):
            record.finish(response.status_code, error_code)  # a stream's own end writes it
        return response

    async def read_body(request: Any) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise APIError(413, f"the body is over {max_body_bytes} bytes", code="body_too_large")
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > max_body_bytes:
                raise APIError(
                    413, f"the body is over {max_body_bytes} bytes", code="body_too_large"
                )
        return raw

    # Routes carry no return annotation: FastAPI would take it for a response model.
    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        record = getattr(request.state, "record", None)
        raw = await read_body(request)
        return await server.complete(raw, False, record, request.receive)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HTTPRequest):
        record = getattr(request.state, "record", None)
        raw = await read_body(request)
        return await server.complete(raw, True, record, request.receive)

    @app.get("/v1/models")
    async def models():
        card = {
            "id": model_name,
            "object": "model",
            "created": server.created,
            "owned_by": "minillm",
            "chat_format": PLAY_SCRIPT if server.chat_format is None else TEMPLATE,
        }
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        extra = monitor.metric_lines() if monitor is not None else ()
        return PlainTextResponse(server.metrics.render(server.batcher, extra))

    @app.get("/")
    async def page():
        return HTMLResponse(_CHAT_PAGE.replace("{{MODEL}}", model_name))

    return app


_CHAT_PAGE = asset_path("chat.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Running it: in a thread (tests, notebooks) or from the command line
# ---------------------------------------------------------------------------------------------


class ServerThread:
    """uvicorn serving ``app`` on ``host`` in a daemon thread; ``port=0`` picks a free port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            import uvicorn
        except ImportError as err:
            raise ImportError(_EXTRA) from err
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
