"""The OpenAI request format: parsing and checking request bodies, errors, the chat template.

Part of lesson 11's server (:mod:`minillm.serve`); kept apart so that the HTTP layer stays short.
Every problem with a request becomes an :class:`APIError` carrying OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}`` and an HTTP status, which the official
``openai`` client turns into ``BadRequestError`` (400), ``NotFoundError`` (404) and so on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from minillm.finetune.sft import ChatFormat, has_chat_tokens
from minillm.serve.generation import SamplingParams

__all__ = [
    "APIError",
    "ParsedRequest",
    "parse_request",
    "chat_prompt",
    "chat_format_for",
    "CHAT_STOP",
    "PLAY_SCRIPT",
    "TEMPLATE",
]

# Two ways to turn messages into a prompt, one per kind of model (chat_format_for picks):
# - TEMPLATE: a chat model (its tokenizer has the chat tokens) gets lesson 08's chat template,
#   the one it was trained with and the one its Hugging Face export carries
#   (minillm.finetune.sft.CHAT_TEMPLATE); its <|end|> token stops the answer.
# - PLAY_SCRIPT: the base model has never seen a chat template, so it gets a play script, which is
#   what it has read: each message is "ROLE:\n<content>\n\n"; the prompt ends with the
#   assistant's cue, and the next user cue stops it.
TEMPLATE, PLAY_SCRIPT = "chat-template", "play-script"
CHAT_STOP = "\n\nUSER:"
MAX_N = 8
MAX_STOP = 4


class APIError(Exception):
    """A request the server refuses: HTTP ``status`` and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class ParsedRequest:
    """A checked request: the prompt as token ids and how to continue it."""

    chat: bool
    prompt_ids: list[int]
    params: SamplingParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # what the client wrote: the prompt, or the messages' contents (monitoring)
    eos_id: int | None = None  # the token that ends an answer (None: the tokenizer's <|endoftext|>)


def _bad(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{name} must be a number, got {type(value).__name__}", name, "invalid_type")
    if math.isnan(value) or not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {value}", name)
    return float(value)


def _integer(body: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be an integer, got {type(value).__name__}", name, "invalid_type")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"between {low} and {high}"
        raise _bad(f"{name} must be {allowed}, got {value}", name)
    return value


def _boolean(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(
            f"{name} must be true or false, got {type(value).__name__}", name, "invalid_type"
        )
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOP
    ):
        raise _bad(
            f"stop must be a string or a list of at most {MAX_STOP} non-empty strings", "stop"
        )
    return list(stops)


def chat_prompt(messages: list[dict[str, str]]) -> str:
    """Render chat messages as a script: ``ROLE:\\n<content>\\n\\n`` each, then ``ASSISTANT:\\n``."""
    parts = [f"{m['role'].upper()}:\n{m['content']}\n\n" for m in messages]
    return "".join(parts) + "ASSISTANT:\n"


def chat_format_for(tokenizer: Any) -> ChatFormat | None:
    """The chat template's encoder for a chat model's tokenizer; None (play script) otherwise."""
    return ChatFormat(tokenizer) if has_chat_tokens(tokenizer) else None


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list of {role, content} objects", "messages")
    checked = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{param} must be an object with role and content", param, "invalid_type")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant", "developer"):
            raise _bad(f"{param}.role must be system, user, assistant or developer", param)
        if isinstance(content, list):  # content parts: keep the text ones
            texts = [
                p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"
            ]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise _bad(f"{param}.content parts must all be text parts", param, "invalid_type")
            content = "".join(texts)
        if not isinstance(content, str):
            raise _bad(f"{param}.content must be a string", param, "invalid_type")
        checked.append({"role": role, "content": content})
    return checked


def _prompt_text(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # one prompt in a list; several prompts per request are not supported
    if not isinstance(prompt, str):
        raise _bad(
            "prompt must be a string (or a list holding one string)", "prompt", "invalid_type"
        )
    return prompt


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259); Python accepts them."""
    raise ValueError(f"{name} is not a JSON value (numbers must be finite)")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object in a request body, or a 400 APIError."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise _bad(f"the body is not valid JSON: {err}", None, "invalid_json") from None
    except RecursionError:  # [[[[...: the parser gives up; the client sent something absurd
        raise _bad(
            "the body is nested too deeply; a request is a flat JSON object", None, "invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", None, "invalid_type")
    return body


def parse_request(
    body: dict[str, Any],
    *,
    chat: bool,
    tokenizer: Any,
    model_name: str,
    block_size: int,
    chat_format: ChatFormat | None = None,
) -> ParsedRequest:
    """Check a completions (``chat=False``) or chat-completions body against the model.

    ``chat_format`` (see :func:`chat_format_for`) renders a chat model's messages with the chat
    template; without it, messages become a play script (:func:`chat_prompt`).

    Raises:
        APIError: 404 for another model name, 400 for anything else that is wrong.
    """
    model = body.get("model")
    if not isinstance(model, str):
        raise _bad("model must be a string", "model", "invalid_type")
    if model != model_name:
        raise APIError(
            404,
            f"the model {model!r} does not exist; this server has {model_name!r}",
            param="model",
            code="model_not_found",
        )
    eos_id = None
    if chat:
        messages = _messages(body)
        client_text = "\n".join(m["content"] for m in messages)
    else:
        client_text = _prompt_text(body)
    if chat and chat_format is not None:
        for i, message in enumerate(messages):
            if message["role"] not in ("user", "assistant"):
                raise _bad(
                    f"messages[{i}].role is {message['role']!r}: this chat model's template knows "
                    "only user and assistant messages",
                    f"messages[{i}]",
                )
        # Contents are encoded as ordinary text: a client must not inject control ids.
        ids = chat_format.encode(messages, add_generation_prompt=True).ids
        eos_id = chat_format.end_id
    else:
        text = chat_prompt(messages) if chat else client_text
        # Special-token strings in a request are plain text: a client must not inject control ids.
        ids = tokenizer.encode_ordinary(text) or [tokenizer.eot_id]
    room = block_size - len(ids)
    prompt_param = "messages" if chat else "prompt"
    if room < 1:
        raise _bad(
            f"the prompt has {len(ids)} tokens; the context holds {block_size}, with at least one "
            "for the answer",
            prompt_param,
            "context_length_exceeded",
        )
    max_tokens = _integer(body, "max_tokens", 1)
    if chat and max_tokens is None:
        max_tokens = _integer(body, "max_completion_tokens", 1)
    param = (
        "max_tokens" if body.get("max_tokens") is not None or not chat else "max_completion_tokens"
    )
    if max_tokens is None:
        max_tokens = room if chat else min(16, room)
    if len(ids) + max_tokens > block_size:
        raise _bad(
            f"prompt ({len(ids)} tokens) + {param} ({max_tokens}) = {len(ids) + max_tokens} is more "
            f"than the context length {block_size}",
            param,
            "context_length_exceeded",
        )
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise _bad(f"{name} is not supported by this server (only 0)", name, "unsupported")
    stop = _stop(body) + ([CHAT_STOP] if chat and chat_format is None else [])
    top_k = _integer(body, "top_k", 1)  # not OpenAI's: vLLM's extension
    params = SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=top_k,
        min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.01, 10.0),
        max_tokens=max_tokens,
        stop=stop,
        seed=_integer(body, "seed", -(2**63), 2**63 - 1),
    )
    stream = _boolean(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options must be an object", "stream_options", "invalid_type")
    return ParsedRequest(
        chat=chat,
        prompt_ids=ids,
        params=params,
        n=_integer(body, "n", 1, MAX_N) or 1,
        stream=stream,
        include_usage=stream and _boolean(options, "include_usage"),
        text=client_text,
        eos_id=eos_id,
    )
