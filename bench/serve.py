"""Serving benchmark: 64 concurrent streaming clients against `minillm.serve`, on loopback only.

The course model is served by `minillm.serve.create_app` in a separate process (so the clients
do not share its interpreter), bound to 127.0.0.1 on a free port. 64 clients open streaming
`/v1/completions` requests at once (seeded sampling, so both runs generate the same tokens) and
read the server-sent events to `data: [DONE]`. Measured per request: time to the first text
piece (TTFT) and total latency; over the run: aggregate generated tokens per second (from each
stream's usage chunk), lost requests (no `[DONE]`), 5xx statuses, and the mean running batch
size the server reports on `/metrics`.

Two servers are compared on the same 64 requests: continuous batching (64 slots) and one
request at a time (1 slot, the others queued). Everything is bounded: a fixed number of
requests, and a time limit per run after which the remaining ones are counted as lost.

    python bench/serve.py            # 64 clients x 48 tokens, writes bench/results/serve.json
    python bench/serve.py --quick    # 16 clients x 16 tokens; the JSON says "mode": "quick"

Target (issue 14): no request lost, no 5xx, and server-side batching >= 3x the aggregate
tokens/s of serving one request at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only: nothing here listens on another interface

SERVER_SCRIPT = """
import sys
import minillm
from minillm.serve import ServerThread, create_app
model, tokenizer = minillm.course_model(verbose=False)
app = create_app(model, tokenizer, n_slots=int(sys.argv[1]), max_queue=int(sys.argv[2]))
with ServerThread(app, host="127.0.0.1", port=0) as server:
    print(server.port, flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""

STARTS = [
    "To be, or not to be",
    "Now is the winter of our discontent",
    "O Romeo, Romeo",
    "Friends, Romans, countrymen",
    "All the world's a stage",
    "If music be the food of love",
    "The quality of mercy",
    "Once more unto the breach",
]


class Server:
    """The serving process: started on a free loopback port, stopped by closing its stdin."""

    def __init__(self, slots: int, max_queue: int, threads: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(slots), str(max_queue)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the server did not start (printed {line!r})")
        self.url = f"http://{HOST}:{int(line)}"

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def one_client(http, url: str, index: int, max_tokens: int, start: float) -> dict:
    body = {
        "model": "minillm",
        "prompt": STARTS[index % len(STARTS)],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": index,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = {"index": index, "status": None, "done": False, "ttft": None, "tokens": 0}
    async with http.stream("POST", f"{url}/v1/completions", json=body) as response:
        out["status"] = response.status_code
        if response.status_code != 200:
            await response.aread()
            return out
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                out["done"] = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                out["tokens"] = chunk["usage"]["completion_tokens"]
            if out["ttft"] is None and any(c.get("text") for c in chunk.get("choices", [])):
                out["ttft"] = time.perf_counter() - start
    out["latency"] = time.perf_counter() - start
    return out


async def load_test(url: str, clients: int, max_tokens: int, time_limit: float) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits, timeout=time_limit) as http:
        await http.get(f"{url}/health")
        start = time.perf_counter()
        tasks = [
            asyncio.create_task(one_client(http, url, i, max_tokens, start)) for i in range(clients)
        ]
        done, pending = await asyncio.wait(tasks, timeout=time_limit)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - start
        metrics = (await http.get(f"{url}/metrics")).text
    results = []
    errors = []
    for task in done:
        if task.exception() is not None:
            errors.append(repr(task.exception())[:200])
        else:
            results.append(task.result())
    ok = [r for r in results if r["status"] == 200 and r["done"]]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    tokens = sum(r["tokens"] for r in ok)
    ttft = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    latency = sorted(r["latency"] for r in ok)
    return {
        "clients": clients,
        "completed": len(ok),
        "lost": clients - len(ok),
        "statuses": statuses,
        "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "client_errors": errors[:5],
        "wall_seconds": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "ttft_p50": percentile(ttft, 50),
        "ttft_p95": percentile(ttft, 95),
        "latency_p50": percentile(latency, 50),
        "latency_p95": percentile(latency, 95),
        "mean_batch_size": mean_batch_size(metrics),
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def mean_batch_size(metrics: str) -> float | None:
    """Mean of the server's running-batch-size histogram (Prometheus ``_sum`` / ``_count``)."""
    found = {}
    for line in metrics.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"minillm_batch_size_{part} "):
                found[part] = float(line.split()[-1])
    return found["sum"] / found["count"] if found.get("count") else None


def run(slots: int, args) -> dict:
    server = Server(slots, max_queue=args.clients, threads=args.threads)
    try:
        return asyncio.run(load_test(server.url, args.clients, args.max_tokens, args.time_limit))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 clients x 16 tokens")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.max_tokens = 16, 16
    torch.set_num_threads(args.threads)
    results = {
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "settings": {
            "clients": args.clients,
            "max_tokens": args.max_tokens,
            "time_limit_s": args.time_limit,
            "server_threads": args.threads,
            "host": HOST,
            "sampling": "temperature 0.8, seed = client index, streamed with include_usage",
        },
        "runs": {},
    }
    for name, slots in (("continuous batching", args.clients), ("one request at a time", 1)):
        print(f"running {name} ({slots} slot(s)) ...", flush=True)
        results["runs"][name] = {"slots": slots, **run(slots, args)}
    batched, single = (
        results["runs"]["continuous batching"],
        results["runs"]["one request at a time"],
    )
    ratio = batched["tokens_per_s"] / single["tokens_per_s"] if single["tokens_per_s"] else None
    results["batching_vs_one_at_a_time"] = ratio
    runs = results["runs"].values()
    results["targets_met"] = {
        "none_lost": all(r["lost"] == 0 for r in runs),
        "no_5xx": all(r["server_errors_5xx"] == 0 for r in runs),
        "batching_at_least_3x": ratio is not None and ratio >= 3.0,
    }
    print(
        f"\n{'server':24s} {'done':>6s} {'lost':>5s} {'5xx':>4s} {'tokens/s':>9s} "
        f"{'TTFT p50':>9s} {'TTFT p95':>9s} {'total p50':>10s} {'total p95':>10s} {'batch':>6s}"
    )

    def sec(v):
        return f"{v:.2f} s" if v is not None else "—"

    for name, r in results["runs"].items():
        batch = f"{r['mean_batch_size']:.1f}" if r["mean_batch_size"] is not None else "—"
        print(
            f"{name:24s} {r['completed']:>6d} {r['lost']:>5d} {r['server_errors_5xx']:>4d} "
            f"{r['tokens_per_s']:>9.1f} {sec(r['ttft_p50']):>9s} {sec(r['ttft_p95']):>9s} "
            f"{sec(r['latency_p50']):>10s} {sec(r['latency_p95']):>10s} {batch:>6s}"
        )
    print(
        f"batching / one at a time: {ratio:.2f}x" if ratio else "no ratio: a run produced nothing"
    )
    print("targets met:", results["targets_met"])
    if not args.no_write:
        write_results(RESULTS, results)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
