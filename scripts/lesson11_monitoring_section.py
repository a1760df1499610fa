# ruff: noqa: E402
"""Lesson 11's monitoring section as a script (to test it; the lead pastes the cells into the
notebook). Cells are separated by '# %% [cell]' lines; the preamble stands in for the lesson's
parameters and import cells."""

# %% [preamble: already in the lesson's parameters and import cells]
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import minillm
from minillm.utils import seed_everything

seed = 1337
seed_everything(seed)
model, tok = minillm.course_model(verbose=False)
model.eval()
_started = time.perf_counter()

# %% [parameters: add these lines to the lesson's parameters cell]
drift_window = 16  # prompts per drift-monitor window
requests_per_phase = 40  # Shakespeare requests, then as many drifted ones
monitor_trials = 10  # replayed switches per drift source when measuring the detection delay

# %% [cell 1: code]
import json
import logging
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from minillm.serve import ServerThread, create_app
from minillm.serve.monitor import DriftMonitor, course_texts, drift_samples, prompt_chunks

logging.getLogger("minillm.monitor").setLevel(logging.ERROR)  # the figure shows the alarms
monitor = DriftMonitor.for_course(model, tok, window=drift_window)
log_dir = tempfile.TemporaryDirectory()
app = create_app(
    model,
    tok,
    model_name="minillm-course",
    n_slots=8,
    monitor=monitor,
    request_log=Path(log_dir.name) / "requests.jsonl",
)
server = ServerThread(app).start()
client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=60)
print(
    f"reference: {monitor.reference.size} chunks of the validation plays, mean "
    f"{monitor.reference.values['bits_per_byte'].mean():.2f} bits per byte; window "
    f"{monitor.window} prompts, alarm when KS > {monitor.threshold:.3f}"
)


# %% [cell 2: code]
def fit(text, max_tokens=8):
    """Cut a prompt so that it and the answer fit the context (the server refuses longer ones)."""
    ids = tok.encode_ordinary(text)[: model.config.block_size - max_tokens]
    return tok.decode_bytes(ids).decode("utf-8", errors="ignore")  # no half character at the end


held_out = prompt_chunks(course_texts("test"), requests_per_phase, seed=1)  # test plays
drifted = [  # then the traffic changes: modern English, Python source and French, interleaved
    text
    for trio in zip(
        *(
            prompt_chunks([drift_samples(kind)], requests_per_phase // 3 + 1, seed=2)
            for kind in ("modern_english", "code", "french")
        ),
        strict=True,
    )
    for text in trio
][:requests_per_phase]


def metric(text, name, **labels):
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return float("nan")


def ask(job):
    i, prompt, max_tokens = job
    client.completions.create(
        model="minillm-course", prompt=prompt, max_tokens=max_tokens, temperature=0.8, seed=i
    )


lengths = (8, 16, 32, 48)  # short and long answers mixed, so latencies spread
jobs = [(i, fit(p, lengths[i % 4]), lengths[i % 4]) for i, p in enumerate(held_out + drifted)]
trace = []  # (requests sent, KS of bits per byte, alarm) after each group of 4 concurrent ones
with ThreadPoolExecutor(4) as pool:
    for start in range(0, len(jobs), 4):
        list(pool.map(ask, jobs[start : start + 4]))
        monitor.join()  # the monitor scores in the background; wait so the trace is exact
        scrape = httpx.get(f"{server.url}/metrics").text
        ks = metric(scrape, "minillm_drift_ks_statistic", feature="bits_per_byte")
        trace.append((start + 4, ks, metric(scrape, "minillm_drift_alarm")))
first_alarm = next((n for n, _, alarm in trace if alarm == 1), None)
print(
    f"{len(jobs)} requests; the traffic switched after request {requests_per_phase}; the alarm "
    f"was first on after request {first_alarm}"
)
print(
    "one request-log line:",
    json.dumps(json.loads((Path(log_dir.name) / "requests.jsonl").read_text().splitlines()[-1])),
)

# %% [cell 3: code]
families = {f.name: f for f in text_string_to_metric_families(scrape)}


def bucket_counts(name):
    """Per-bucket counts (Prometheus buckets are cumulative) and their upper edges."""
    buckets = [s for s in families[name].samples if s.name == name + "_bucket"]
    edges = [float(s.labels["le"]) for s in buckets]
    cumulative = np.array([s.value for s in buckets])
    return edges, np.diff(cumulative, prepend=0)


fig, (ax_lat, ax_drift) = plt.subplots(1, 2, figsize=(7, 3))
hists = {
    "time to first token": bucket_counts("minillm_time_to_first_token_seconds"),
    "total latency": bucket_counts("minillm_request_latency_seconds"),
}
edges = hists["total latency"][0]
shown = int(np.flatnonzero(hists["total latency"][1]).max()) + 2  # the slowest bucket, and one
slots = np.arange(shown)
for offset, (label, (_, counts)) in enumerate(hists.items()):
    ax_lat.bar(slots + 0.4 * offset - 0.2, counts[:shown], width=0.4, label=label)
ax_lat.set_xticks(slots, [f"≤{e:g}" if np.isfinite(e) else "more" for e in edges[:shown]])
ax_lat.set_xlabel("latency bucket (s)")
ax_lat.set_ylabel("requests")
ax_lat.set_title("Server latency histogram (/metrics)")
ax_lat.legend(fontsize=8)

steps = np.array([t[0] for t in trace])
values = np.array([t[1] for t in trace])
ax_drift.plot(steps, values, marker=".", label="KS, bits per byte")
ax_drift.axhline(monitor.threshold, color="red", linestyle="--", label="alarm threshold")
ax_drift.axvline(requests_per_phase, color="grey", linestyle=":", label="traffic switch")
ax_drift.set_xlabel("requests sent")
ax_drift.set_ylabel("KS distance to reference")
ax_drift.set_title("Drift score of the last prompts")
ax_drift.legend(fontsize=8)
fig.tight_layout()
plt.show()
fig.savefig("/tmp/lesson11_monitoring.png", dpi=100)  # SCRIPT ONLY: not in the notebook

# %% [cell 4: code]
# The false-alarm rate and the detection delay, measured by replaying scored prompts
# through the monitor (the server's own call, without HTTP)
held_pool = monitor.scorer.score(prompt_chunks(course_texts("test"), 300, seed=5))
drift_pools = {
    kind: monitor.scorer.score(prompt_chunks([drift_samples(kind)], 80, seed=6))
    for kind in ("modern_english", "code", "french")
}
rng = random.Random(seed)


def fresh():
    return DriftMonitor(None, monitor.reference, window=drift_window)


replay = fresh()
n_windows, alarmed = 30, set()
for i in range((n_windows + 1) * drift_window):
    if replay.observe_score(rng.choice(held_pool)).alarm and i >= drift_window:
        alarmed.add((i - drift_window) // drift_window)
print(
    f"held-out Shakespeare: {len(alarmed)} of {n_windows} windows raised an alarm "
    f"(bound: {monitor.false_alarm_rate:.0%} of windows)"
)
for kind, drifted_pool in drift_pools.items():
    delays = []
    for _ in range(monitor_trials):
        replay = fresh()
        for _ in range(drift_window):
            replay.observe_score(rng.choice(held_pool))
        delay = next(
            (k for k in range(1, 5 * drift_window + 1)
             if replay.observe_score(rng.choice(drifted_pool)).alarm),
            None,
        )  # fmt: skip
        delays.append(delay)
    found = [d for d in delays if d is not None]
    print(
        f"switch to {kind:14s}: caught in {len(found)}/{monitor_trials} switches, "
        f"median delay {np.median(found) if found else float('nan'):.0f} prompts, "
        f"worst {max(found) if found else 'never'}"
    )
server.stop()
log_dir.cleanup()
print("server stopped:", not server.thread.is_alive())
print(f"[script] section took {time.perf_counter() - _started:.1f} s")
