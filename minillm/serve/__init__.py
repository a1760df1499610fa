"""Lesson 11 (serving): logits processors and generation with a KV cache, batched and
continuous-batching engines, and the OpenAI-compatible HTTP API.

Modules: ``api``, ``app``, ``engine``, ``generation``.
"""

from minillm.serve.api import (
    CHAT_STOP,
    MAX_N,
    MAX_STOP,
    APIError,
    ParsedRequest,
    chat_prompt,
    parse_body,
    parse_request,
)
from minillm.serve.app import (
    Metrics,
    ServerThread,
    create_app,
)
from minillm.serve.engine import (
    ContinuousBatcher,
    EngineThread,
    QueueFullError,
    Request,
    SlotKVCache,
    forward_slots,
    generate_batch,
)
from minillm.serve.generation import (
    LogitsProcessor,
    MinP,
    RepetitionPenalty,
    SamplingParams,
    Temperature,
    TextStream,
    TopK,
    TopP,
    apply_processors,
    choose_next,
    generate,
    make_processors,
    stream_text,
)

__all__ = [
    "APIError",
    "CHAT_STOP",
    "ContinuousBatcher",
    "EngineThread",
    "LogitsProcessor",
    "MAX_N",
    "MAX_STOP",
    "Metrics",
    "MinP",
    "ParsedRequest",
    "QueueFullError",
    "RepetitionPenalty",
    "Request",
    "SamplingParams",
    "ServerThread",
    "SlotKVCache",
    "Temperature",
    "TextStream",
    "TopK",
    "TopP",
    "apply_processors",
    "chat_prompt",
    "choose_next",
    "create_app",
    "forward_slots",
    "generate",
    "generate_batch",
    "make_processors",
    "parse_body",
    "parse_request",
    "stream_text",
]
