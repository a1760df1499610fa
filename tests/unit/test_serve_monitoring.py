"""minillm.serve's monitoring: /metrics parsed back by prometheus_client, the JSON-lines request
log, the drift monitor's gauges, and ``minillm serve``'s options for them."""

from __future__ import annotations

import argparse
import json
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
parser = pytest.importorskip("prometheus_client.parser")
from fastapi.testclient import TestClient  # noqa: E402

from minillm.cli.serve import add_cli  # noqa: E402
from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.serve import create_app  # noqa: E402
from minillm.serve.metrics import RequestLog  # noqa: E402
from minillm.serve.monitor import FEATURES, DriftMonitor, PromptScorer, Reference  # noqa: E402
from minillm.tokenizer import BPETokenizer  # noqa: E402

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. "


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


def post(client, path: str, **body):
    return client.post(path, json={"model": "minillm", **body})


def families(text: str) -> dict:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(family, **labels) -> float:
    matches = [
        s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, f"expected one sample with {labels}, got {family.samples}"
    return matches[0]


def test_metrics_parse_and_count_what_happened(model, tokenizer, tmp_path):
    app = create_app(model, tokenizer, n_slots=4, request_log=tmp_path / "requests.jsonl")
    with TestClient(app) as client:
        for _ in range(3):
            assert post(client, "/v1/completions", prompt="To be", max_tokens=4).status_code == 200
        streamed = post(client, "/v1/completions", prompt="not", max_tokens=3, stream=True)
        assert streamed.status_code == 200
        assert post(client, "/v1/completions", prompt="x", temperature=9).status_code == 400
        assert post(client, "/v1/completions", prompt="x", model="gpt-4o").status_code == 404
        assert client.get('/no/such"path').status_code == 404
        metrics = families(client.get("/metrics").text)

    kinds = {name: f.type for name, f in metrics.items()}
    for name in ("request_latency_seconds", "time_to_first_token_seconds",
                 "decode_tokens_per_second", "batch_size"):  # fmt: skip
        assert kinds[f"minillm_{name}"] == "histogram", kinds
    for name in ("queue_depth", "running", "slots", "batch_occupancy", "tokens_per_second"):
        assert kinds[f"minillm_{name}"] == "gauge", kinds
    for name in ("requests", "request_errors", "finished", "completion_tokens", "prompt_tokens"):
        assert kinds[f"minillm_{name}"] == "counter", kinds

    requests = metrics["minillm_requests"]
    assert value(requests, path="/v1/completions", status="200") == 4
    assert value(requests, path="other", status="404") == 1  # unknown paths share one label
    errors = metrics["minillm_request_errors"]
    assert value(errors, status="400", code="invalid_value") == 1
    assert value(errors, status="404", code="model_not_found") == 1
    assert value(metrics["minillm_finished"], reason="length") == 4
    assert value(metrics["minillm_completion_tokens"]) == 3 * 4 + 3
    assert value(metrics["minillm_slots"]) == 4 and value(metrics["minillm_batch_occupancy"]) == 0
    assert value(metrics["minillm_tokens_per_second"]) > 0

    for name in ("minillm_time_to_first_token_seconds", "minillm_request_latency_seconds"):
        samples = metrics[name].samples
        buckets = [s.value for s in samples if s.name.endswith("_bucket")]
        assert buckets == sorted(buckets), f"{name} buckets are not cumulative: {buckets}"
        count = next(s.value for s in samples if s.name.endswith("_count"))
        assert buckets[-1] == count == 4  # +Inf holds every observation

    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["status"] for r in records] == [200, 200, 200, 200, 400, 404]
    assert [r["stream"] for r in records[:4]] == [False, False, False, True]
    assert records[0]["id"].startswith("cmpl-") and records[0]["prompt_tokens"] == len(
        tokenizer.encode("To be")
    )
    assert records[0]["completion_tokens"] == 4 and records[3]["completion_tokens"] == 3
    assert 0 < records[0]["ttft_s"] <= records[0]["latency_s"]
    assert records[4]["error"] == "invalid_value" and records[4]["ttft_s"] is None
    assert all("prompt" not in r for r in records)  # no prompt text unless asked


def test_request_log_keeps_prompts_only_when_asked(model, tokenizer, tmp_path):
    path = tmp_path / "with_prompts.jsonl"
    with TestClient(create_app(model, tokenizer, request_log=path, log_prompts=True)) as client:
        messages = [{"role": "user", "content": "whether 'tis"}]
        assert (
            post(client, "/v1/chat/completions", messages=messages, max_tokens=2).status_code == 200
        )
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["prompt"] == "whether 'tis" and record["path"] == "/v1/chat/completions"


def test_request_log_lines_never_interleave(tmp_path):
    log = RequestLog(tmp_path / "log.jsonl")
    big = "x" * 20_000  # larger than a pipe's atomic write, still one write() to a regular file

    def writer(k: int) -> None:
        for i in range(50):
            log.write({"writer": k, "i": i, "pad": big})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    log.write({"after": "close"})  # reopens
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 201 and records[-1] == {"after": "close"}
    assert sorted((r["writer"], r["i"]) for r in records[:-1]) == [
        (k, i) for k in range(4) for i in range(50)
    ]
    with pytest.raises(ValueError, match="is a folder"):
        RequestLog(tmp_path)


def test_drift_monitor_in_the_server(model, tokenizer):
    scorer = PromptScorer(model, tokenizer, np.full(tokenizer.vocab_size, 50))
    reference = Reference.from_scores(scorer.score([TEXT[i : i + 30] for i in range(0, 40, 2)]))
    monitor = DriftMonitor(scorer, reference, window=4)
    with TestClient(create_app(model, tokenizer, monitor=monitor)) as client:
        for prompt in ("To be", "or not", "to be, that", "is the question"):
            post(client, "/v1/completions", prompt=prompt, max_tokens=1)
        monitor.join()
        metrics = families(client.get("/metrics").text)
    assert value(metrics["minillm_drift_prompts_scored"]) == 4
    assert value(metrics["minillm_drift_window_prompts"]) == 4
    assert {s.labels["feature"] for s in metrics["minillm_drift_ks_statistic"].samples} == set(
        FEATURES
    )
    assert value(metrics["minillm_drift_alarm"]) in (0, 1)
    assert "minillm_requests" in metrics  # the server's own metrics are still there


def test_serve_cli_has_the_monitoring_options():
    root = argparse.ArgumentParser()
    add_cli(root.add_subparsers())
    args = root.parse_args(
        ["serve", "--request-log", "r.jsonl", "--request-log-prompts", "--drift-monitor"]
    )
    assert args.request_log == "r.jsonl" and args.request_log_prompts and args.drift_monitor
    defaults = root.parse_args(["serve"])
    assert defaults.request_log is None and not defaults.request_log_prompts
    assert not defaults.drift_monitor and defaults.drift_window == 32
