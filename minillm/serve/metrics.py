"""What the server measures: Prometheus metrics and a JSON-lines request log.

Part of lesson 11's server (:mod:`minillm.serve`); in the restructured package
``minillm/serve/metrics.py``. :class:`Metrics` renders Prometheus' text exposition format by
hand (no dependency): latency, time-to-first-token and decoding-speed histograms, token counters,
errors by status and code, queue depth and batch occupancy, which are the signals a latency or
error-rate alert is written against (for example
``histogram_quantile(0.95, rate(minillm_time_to_first_token_seconds_bucket[5m])) > 1``).
:class:`RequestLog` appends one JSON line per completion request, without the prompt's text
unless asked.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Metrics", "RequestLog", "RequestRecord", "COMPLETION_PATHS"]

COMPLETION_PATHS = ("/v1/completions", "/v1/chat/completions")
# Paths get their own label value; any other path (a typo, a scanner) is counted as "other", so a
# client cannot create unbounded label values (each one is a new series in Prometheus).
KNOWN_PATHS = (*COMPLETION_PATHS, "/v1/models", "/health", "/metrics", "/")

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SPEED_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _label(value: Any) -> str:
    """A label value escaped as the exposition format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, Any]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return lines + [f"{name}{labels} {value}" for labels, value in samples]


class _Histogram:
    """Cumulative buckets, a sum and a count: Prometheus' histogram."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.total, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        out += [
            f'{name}_bucket{{le="{e}"}} {c}' for e, c in zip(self.buckets, self.counts, strict=True)
        ]
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total}"]
        return out + [f"{name}_count {self.count}"]


class Metrics:
    """Counters, gauges and histograms of the server, rendered by :meth:`render`.

    Args:
        rate_window_s: :meth:`render`'s tokens-per-second gauge counts the completion tokens of
            requests that finished within this many seconds.
    """

    def __init__(self, rate_window_s: float = 10.0) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.errors: dict[tuple[int, str], int] = {}
        self.finish_reasons: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.ttft = _Histogram(LATENCY_BUCKETS)
        self.speed = _Histogram(SPEED_BUCKETS)
        self.batch = _Histogram(BATCH_BUCKETS)
        self.rate_window_s = rate_window_s
        self._recent: deque[tuple[float, int]] = deque()  # (finish time, completion tokens)
        self._started = time.perf_counter()
        self._batches_seen = 0

    def count_request(self, path: str, status: int, error_code: str | None = None) -> None:
        """One HTTP response; statuses from 400 up are also counted as errors with their code."""
        path = path if path in KNOWN_PATHS else "other"
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
            if status >= 400:
                key = (status, error_code or "none")
                self.errors[key] = self.errors.get(key, 0) + 1

    def finished(self, request: Any) -> None:
        """One engine request done (called on the engine thread)."""
        now = time.perf_counter()
        with self.lock:
            self.prompt_tokens += len(request.prompt)
            self.completion_tokens += len(request.tokens)
            reason = request.finish_reason or "none"
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1
            self.latency.observe(now - request.submitted_at)
            first = request.first_token_at
            if first is not None:
                self.ttft.observe(first - request.submitted_at)
                if len(request.tokens) > 1 and now > first:  # decoding speed after the first
                    self.speed.observe((len(request.tokens) - 1) / (now - first))
            self._recent.append((now, len(request.tokens)))

    def tokens_per_second(self) -> float:
        """Completion tokens of the requests finished in the last ``rate_window_s`` seconds, per
        second (over the uptime while it is shorter)."""
        now = time.perf_counter()
        with self.lock:
            while self._recent and self._recent[0][0] < now - self.rate_window_s:
                self._recent.popleft()
            tokens = sum(n for _, n in self._recent)
        return tokens / max(1e-9, min(self.rate_window_s, now - self._started))

    def render(self, batcher: Any, extra: Iterable[str] = ()) -> str:
        """Everything in Prometheus' text format; ``extra`` lines (the drift monitor's) appended."""
        throughput = self.tokens_per_second()
        with self.lock:
            sizes = batcher.batch_sizes[self._batches_seen :]
            self._batches_seen += len(sizes)
            for size in sizes:
                self.batch.observe(size)
            slots = batcher.cache.n_slots
            running = len(batcher.running)
            lines = _family(
                "minillm_requests_total",
                "counter",
                "HTTP responses by path and status",
                (
                    (f'{{path="{_label(path)}",status="{status}"}}', n)
                    for (path, status), n in sorted(self.requests.items())
                ),
            )
            lines += _family(
                "minillm_request_errors_total",
                "counter",
                "HTTP responses with status >= 400, by status and error code",
                (
                    (f'{{status="{status}",code="{_label(code)}"}}', n)
                    for (status, code), n in sorted(self.errors.items())
                ),
            )
            lines += _family(
                "minillm_finished_total",
                "counter",
                "engine requests by finish reason (stop, length, cancelled, error)",
                ((f'{{reason="{_label(r)}"}}', n) for r, n in sorted(self.finish_reasons.items())),
            )
            lines += _family(
                "minillm_prompt_tokens_total",
                "counter",
                "prompt tokens",
                [("", self.prompt_tokens)],
            )
            lines += _family(
                "minillm_completion_tokens_total",
                "counter",
                "generated tokens",
                [("", self.completion_tokens)],
            )
            lines += _family(
                "minillm_tokens_per_second",
                "gauge",
                f"generated tokens per second over the last {self.rate_window_s:g} s",
                [("", throughput)],
            )
            lines += self.latency.lines(
                "minillm_request_latency_seconds", "engine request latency, queue included"
            )
            lines += self.ttft.lines(
                "minillm_time_to_first_token_seconds", "time from arrival to the first token"
            )
            lines += self.speed.lines(
                "minillm_decode_tokens_per_second", "per-request decoding speed after the first"
            )
            lines += self.batch.lines("minillm_batch_size", "running requests at each step")
            lines += _family(
                "minillm_queue_depth", "gauge", "requests waiting for a slot", [("", batcher.queue_depth)]
            )  # fmt: skip
            lines += _family("minillm_running", "gauge", "requests decoding now", [("", running)])
            lines += _family("minillm_slots", "gauge", "the engine's batch slots", [("", slots)])
            lines += _family(
                "minillm_batch_occupancy", "gauge", "running / slots", [("", running / slots)]
            )
        return "\n".join([*lines, *extra]) + "\n"


# ---------------------------------------------------------------------------------------------
# The request log
# ---------------------------------------------------------------------------------------------


class RequestLog:
    """Append-only JSON lines, one per completion request.

    Each line is written by one ``os.write`` on a file opened with ``O_APPEND``, under a lock: a
    line is never interleaved with another (threads of this process, or other processes writing
    the same file) and is in the operating system's hands when :meth:`write` returns; a crash
    loses at most whole lines, never leaves half of one.

    Args:
        path: the log file (created if missing, appended to otherwise).
        include_prompts: also record the prompt text. Off by default: prompts can hold personal
            data, so keep them only where that is allowed.
    """

    def __init__(self, path: str | Path, *, include_prompts: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"the request log {self.path} is a folder; give a file path")
        self.include_prompts = include_prompts
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._open()  # now, so that an unwritable path fails at start-up, not at the first request

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (reopening the file after :meth:`close`)."""
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            written = os.write(self._open(), data)
        if written != len(data):  # regular files take a whole write; anything else is an error
            raise OSError(f"wrote {written} of {len(data)} bytes to the request log {self.path}")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class RequestRecord:
    """One completion request on its way to the :class:`RequestLog`.

    The middleware opens it; :meth:`minillm.serve` fills in the engine requests; :meth:`finish`
    (called once the response is complete, which for a stream is after its last event) writes it.
    """

    def __init__(self, log: RequestLog, path: str) -> None:
        self.log, self.path = log, path
        self.id = "req-" + uuid.uuid4().hex[:24]  # replaced by the response id once there is one
        self.time = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.started = time.perf_counter()
        self.requests: list[Any] = []
        self.stream = False
        self.prompt: str | None = None
        self._done = False

    def finish(self, status: int, error_code: str | None = None) -> None:
        if self._done:
            return
        self._done = True
        firsts = [r.first_token_at for r in self.requests if r.first_token_at is not None]
        record: dict[str, Any] = {
            "id": self.id,
            "time": self.time,
            "path": self.path,
            "status": status,
            "error": error_code,
            "stream": self.stream,
            "n": len(self.requests),
            "prompt_tokens": len(self.requests[0].prompt) if self.requests else None,
            "completion_tokens": sum(len(r.tokens) for r in self.requests),
            "finish_reasons": [r.finish_reason for r in self.requests],
            "ttft_s": round(min(firsts) - self.started, 6) if firsts else None,
            "latency_s": round(time.perf_counter() - self.started, 6),
        }
        if self.log.include_prompts:
            record["prompt"] = self.prompt
        self.log.write(record)
