"""Drift on incoming traffic: does what users send still look like what the model was made for?

Taught in lesson 11 (serving); the server (:mod:`minillm.serve`) feeds every prompt to a
:class:`DriftMonitor` when one is given. (In the restructured package: ``minillm/serve/monitor.py``.)

Each prompt becomes two numbers, both computed by the served model itself, with no labels:

* **bits per byte**: the model's cross-entropy on the prompt (every token predicted from the ones
  before it, the first from ``<|endoftext|>``), divided by the prompt's UTF-8 bytes, the course's
  headline unit. Text unlike the training data surprises the model, so this rises.
* **rare-token share**: the fraction of the prompt's tokens seen fewer than ``rare_max_count``
  times in the training split. Byte-level BPE has no unknown token, so unseen text shows up as
  rare pieces (single bytes, odd fragments) instead.

A sliding window of the last ``window`` prompts is compared, feature by feature, with a reference
sample: prompt-sized chunks of the validation plays (:func:`course_texts`), which the model never
trained on. The test is the **two-sample Kolmogorov-Smirnov** test, written out below. Why KS and
not the population stability index (PSI, also computed, as information): KS needs no binning, and
under "same distribution" its statistic has a known distribution whatever the feature's own
distribution is, so a threshold follows from a chosen false-alarm probability. PSI's usual
thresholds (0.1, 0.25) are conventions whose false-alarm rate depends on the bins and on the
window size.

Threshold: the window is re-tested after every prompt, so a stream of W prompts makes W
(strongly overlapping) tests. The per-test level is ``alpha = false_alarm_rate / W``, split
equally between the two features (Bonferroni), so by the union bound the chance that *any* test
alarms during one window's worth of in-distribution traffic is at most ``false_alarm_rate``.
That guarantee assumes prompts drawn independently from the reference distribution; real traffic
differs (other plays, other prompt lengths, users who send several related prompts), which is why
``bench/monitoring.py`` measures the false-alarm rate on held-out plays instead of trusting it.

What an alarm means: the inputs changed. It says nothing about whether the answers got worse,
and a stable score does not prove they are good: a drift alarm is not a quality measurement.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import random
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from minillm.data.pipeline import prepare_corpus, split_documents
from minillm.train.shards import COURSE_DATA
from minillm.utils.assets import asset_path

__all__ = [
    "FEATURES",
    "ks_statistic",
    "ks_pvalue",
    "ks_critical_value",
    "population_stability_index",
    "PromptScorer",
    "PromptScore",
    "Reference",
    "DriftState",
    "DriftMonitor",
    "course_texts",
    "prompt_chunks",
    "drift_samples",
]

FEATURES: tuple[str, ...] = ("bits_per_byte", "rare_token_share")
LOG = logging.getLogger("minillm.monitor")
_SAMPLES = asset_path("drift")

# ---------------------------------------------------------------------------------------------
# The statistics, written out
# ---------------------------------------------------------------------------------------------


def _sample(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty; a two-sample test needs at least one value in each")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; only finite numbers are allowed")
    return array


def ks_statistic(a: Any, b: Any) -> float:
    r"""The two-sample Kolmogorov-Smirnov statistic.

    .. math::

        D = \max_x \lvert F_a(x) - F_b(x) \rvert

    :math:`F_a`, :math:`F_b` are the empirical CDFs. The maximum is reached just after one of the
    observed values, so evaluating both CDFs at every value (counting ties in full) is exact.
    """
    a, b = np.sort(_sample(a, "a")), np.sort(_sample(b, "b"))
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _kolmogorov_sf(lam: float) -> float:
    """$Q(\\lambda) = 2\\sum_{k\\ge1} (-1)^{k-1} e^{-2k^2\\lambda^2}$, the Kolmogorov tail."""
    if lam < 0.2:  # the series converges slowly here, and Q is 1 to 15 digits
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2.0 * (-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-16:
            break
    return min(1.0, max(0.0, total))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """P(D >= d) for samples of sizes ``n`` and ``m`` from one continuous distribution.

    Kolmogorov's limit with Stephens' (1970) small-sample correction:
    $p = Q\\big((\\sqrt{n_e} + 0.12 + 0.11/\\sqrt{n_e})\\,d\\big)$, $n_e = nm/(n+m)$, accurate to
    a few percent for $n_e \\ge 4$. With ties (a discrete feature) the test is conservative: the
    real false-alarm probability is lower than the p-value says.
    """
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"d must be a KS statistic in [0, 1], got {d}")
    if min(n, m) < 1:
        raise ValueError(f"sample sizes must be >= 1, got n={n}, m={m}")
    root = math.sqrt(n * m / (n + m))
    return _kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def ks_critical_value(alpha: float, n: int, m: int) -> float:
    """The smallest $d$ with ``ks_pvalue(d, n, m) <= alpha`` (bisection; 1e-9 precise)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    low, high = 0.0, 1.0
    if ks_pvalue(high, n, m) > alpha:
        return math.inf  # these sample sizes can never reach that level
    while high - low > 1e-9:
        mid = (low + high) / 2
        low, high = (mid, high) if ks_pvalue(mid, n, m) > alpha else (low, mid)
    return high


def population_stability_index(
    reference: Any, current: Any, bins: int = 10, floor: float = 1e-4
) -> float:
    """$\\mathrm{PSI} = \\sum_i (q_i - p_i) \\ln(q_i / p_i)$ over ``bins`` reference-quantile bins.

    $p_i$ and $q_i$ are the reference's and the current sample's shares of bin $i$; the bin
    edges are the reference's quantiles (repeated edges of a discrete feature merge), and shares
    are floored at ``floor`` so an empty bin costs a large but finite amount.
    """
    reference, current = _sample(reference, "reference"), _sample(current, "current")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=inner.size + 1)
    q = np.bincount(np.searchsorted(inner, current, side="right"), minlength=inner.size + 1)
    p = np.maximum(p / reference.size, floor)
    q = np.maximum(q / current.size, floor)
    return float(np.sum((q - p) * np.log(q / p)))


# ---------------------------------------------------------------------------------------------
# Scoring prompts with the served model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptScore:
    """One prompt's features, and how much of it was scored."""

    bits_per_byte: float
    rare_token_share: float
    tokens: int
    bytes: int

    def feature(self, name: str) -> float:
        return float(getattr(self, name))


class PromptScorer:
    """Bits per byte and rare-token share of prompts under ``model`` and ``tokenizer``.

    Args:
        token_counts: how often each id occurs in the training split (length = vocabulary).
        rare_max_count: ids seen fewer times than this are rare.
        batch_size: prompts per forward pass.

    A prompt longer than the context is scored on its first ``block_size - 1`` tokens (the
    server refuses longer ones anyway), and its bytes are those of the scored tokens.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        token_counts: Any,
        *,
        rare_max_count: int = 20,
        batch_size: int = 32,
    ) -> None:
        counts = np.asarray(token_counts)
        vocab = model.config.vocab_size
        if counts.ndim != 1 or counts.size != vocab:
            raise ValueError(
                f"token_counts must have one count per id ({vocab}), got {counts.shape}"
            )
        if rare_max_count < 1 or batch_size < 1:
            raise ValueError(
                f"rare_max_count and batch_size must be >= 1, got {rare_max_count}, {batch_size}"
            )
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.rare = torch.from_numpy(counts < rare_max_count)
        self.rare_max_count = rare_max_count
        self.eot = tokenizer.eot_id
        self._token_len = torch.tensor([len(tokenizer.token_bytes(i)) for i in range(vocab)])

    @classmethod
    def from_training_texts(
        cls, model: Any, tokenizer: Any, texts: Sequence[str], **kwargs: Any
    ) -> PromptScorer:
        """A scorer whose rare ids are counted in ``texts`` (the training split)."""
        counts = np.zeros(model.config.vocab_size, dtype=np.int64)
        for ids in tokenizer.encode_ordinary_batch(list(texts)):
            counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=counts.size)
        return cls(model, tokenizer, counts, **kwargs)

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> list[PromptScore]:
        """One :class:`PromptScore` per text (an empty text is refused)."""
        limit = self.model.config.block_size - 1
        encoded = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise ValueError(f"prompt {i} must be a non-empty string, got {text!r}")
            encoded.append(self.tokenizer.encode_ordinary(text)[:limit] or [self.eot])
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding
        scores: list[PromptScore | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            for row, score in zip(rows, self._score_batch([encoded[i] for i in rows]), strict=True):
                scores[row] = score
        return scores  # type: ignore[return-value]

    def _score_batch(self, batch: list[list[int]]) -> list[PromptScore]:
        width = max(len(ids) for ids in batch) + 1
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width - 1, dtype=torch.bool)
        for row, prompt in enumerate(batch):  # right padding: causal attention never sees it
            ids[row, : len(prompt) + 1] = torch.tensor([self.eot, *prompt])
            mask[row, : len(prompt)] = True
        device = next(self.model.parameters()).device
        logits, _ = self.model(ids[:, :-1].to(device))
        logits, targets = logits.float().cpu(), ids[:, 1:]
        # -log p(target) = logsumexp(logits) - logit(target): no (B, T, V) log-softmax
        nats = (logits.logsumexp(-1) - logits.gather(-1, targets[..., None])[..., 0]) * mask
        n_bytes = (self._token_len[targets] * mask).sum(dim=1)
        rare = (self.rare[targets] & mask).sum(dim=1)
        n_tokens = mask.sum(dim=1)
        bits = nats.sum(dim=1) / math.log(2)
        return [
            PromptScore(
                bits_per_byte=float(bits[r] / max(1, int(n_bytes[r]))),
                rare_token_share=float(rare[r] / n_tokens[r]),
                tokens=int(n_tokens[r]),
                bytes=int(n_bytes[r]),
            )
            for r in range(len(batch))
        ]


# ---------------------------------------------------------------------------------------------
# Texts: the course's splits, prompt-sized chunks, and out-of-distribution samples
# ---------------------------------------------------------------------------------------------


def course_texts(split: str) -> list[str]:
    """The documents of one split ("train", "val" or "test") of the course data.

    The same documents :func:`minillm.course.course_data` tokenizes (the corpus cleaned by
    :func:`minillm.data.prepare_corpus`, split by :func:`minillm.data.split_documents` with
    :data:`minillm.prepare.COURSE_DATA`'s fractions and seed), as text, without writing a cache.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return list(_course_splits()[split])


@functools.lru_cache(maxsize=1)
def _course_splits() -> dict[str, tuple[str, ...]]:
    """Cleaning the corpus takes seconds; a notebook asks for several splits."""

    docs = prepare_corpus(COURSE_DATA["corpus"])
    splits = split_documents(docs, fractions=COURSE_DATA["fractions"], seed=COURSE_DATA["seed"])
    return {name: tuple(doc.text for doc in split) for name, split in splits.items()}


def prompt_chunks(
    texts: Sequence[str], n: int, *, min_chars: int = 80, max_chars: int = 320, seed: int = 0
) -> list[str]:
    """``n`` prompt-like chunks: whole lines from a random place in a random text.

    Each chunk starts at a random non-blank line and takes lines until it holds at least a
    length drawn uniformly from ``min_chars..max_chars``, cut at ``max_chars``. Texts are drawn
    in proportion to their length. Chunks are drawn with replacement, reproducibly from ``seed``.
    """
    if n < 1 or not 1 <= min_chars <= max_chars:
        raise ValueError(
            f"need n >= 1 and 1 <= min_chars <= max_chars, got {n}, {min_chars}, {max_chars}"
        )
    documents = [[line for line in t.splitlines() if line.strip()] for t in texts]
    documents = [lines for lines in documents if lines]
    if not documents:
        raise ValueError("texts hold no non-blank line to cut prompts from")
    rng = random.Random(seed)
    weights = [sum(map(len, lines)) for lines in documents]
    chunks = []
    for _ in range(n):
        lines = rng.choices(documents, weights)[0]
        target, i, chunk = rng.randint(min_chars, max_chars), rng.randrange(len(lines)), ""
        while len(chunk) < target:
            chunk += lines[i % len(lines)] + "\n"
            i += 1
        chunks.append(chunk[:max_chars])
    return chunks


def drift_samples(kind: str) -> str:
    """Text unlike the training data, for drift demonstrations (no network needed).

    ``"modern_english"``, ``"french"`` and ``"german"`` are paragraphs written for the course
    (``minillm/assets/drift/``); ``"code"`` is Python source from the standard library on disk.
    """
    if kind == "code":
        import inspect
        import json.decoder
        import optparse
        import textwrap

        return "\n".join(inspect.getsource(m) for m in (textwrap, json.decoder, optparse))
    path = _SAMPLES / f"{kind}.txt"
    if kind not in ("modern_english", "french", "german") or not path.is_file():
        raise ValueError(
            f"kind must be 'modern_english', 'french', 'german' or 'code', got {kind!r}"
        )
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The reference and the monitor
# ---------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """Each feature's values on in-distribution prompts (the reference sample)."""

    values: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        missing = [f for f in FEATURES if f not in self.values]
        if missing:
            raise ValueError(f"the reference lacks feature(s) {missing}; it needs {list(FEATURES)}")
        self.values = {f: np.sort(_sample(self.values[f], f"reference {f}")) for f in FEATURES}

    @property
    def size(self) -> int:
        return int(self.values[FEATURES[0]].size)

    @classmethod
    def from_scores(cls, scores: Sequence[PromptScore]) -> Reference:
        return cls({f: np.array([s.feature(f) for s in scores]) for f in FEATURES})


@dataclass
class DriftState:
    """The monitor after its latest prompt."""

    observed: int = 0
    window: int = 0
    alarm: bool = False
    alarms: int = 0
    ks: dict[str, float] = field(default_factory=dict)
    p_value: dict[str, float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)
    window_mean: dict[str, float] = field(default_factory=dict)


class DriftMonitor:
    """A sliding window of prompt features tested against a :class:`Reference` (module docstring).

    Args:
        scorer: turns prompts into features (:class:`PromptScorer`); None if only
            :meth:`observe_score` is used.
        reference: the in-distribution sample.
        window: prompts per window; no test before the window is full.
        false_alarm_rate: bound on the chance of any alarm during ``window`` prompts of
            in-distribution traffic (union bound over the window's tests, Bonferroni over
            features).
        max_pending: prompts waiting for the background scorer beyond this are dropped (and
            counted): monitoring must never slow serving down.
    """

    def __init__(
        self,
        scorer: PromptScorer | None,
        reference: Reference,
        *,
        window: int = 32,
        false_alarm_rate: float = 0.01,
        max_pending: int = 256,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an int >= 2, got {window!r}")
        if not 0.0 < false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
        self.scorer, self.reference, self.window = scorer, reference, window
        self.false_alarm_rate = false_alarm_rate
        self.alpha = false_alarm_rate / window / len(FEATURES)  # per test, per feature
        self.threshold = ks_critical_value(self.alpha, window, reference.size)
        self._recent: deque[PromptScore] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.state = DriftState()
        self.dropped = 0
        self._pending: queue.Queue = queue.Queue(max_pending)
        self._worker: threading.Thread | None = None

    @classmethod
    def for_course(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        n_reference: int = 400,
        seed: int = 0,
        rare_max_count: int = 20,
        **kwargs: Any,
    ) -> DriftMonitor:
        """A monitor for ``model``: rare ids counted in the course's training split, the reference
        ``n_reference`` chunks of the validation plays (:func:`prompt_chunks` defaults)."""
        scorer = PromptScorer.from_training_texts(
            model, tokenizer, course_texts("train"), rare_max_count=rare_max_count
        )
        chunks = prompt_chunks(course_texts("val"), n_reference, seed=seed)
        return cls(scorer, Reference.from_scores(scorer.score(chunks)), **kwargs)

    # ---- observing ---------------------------------------------------------------------------

    def observe(self, text: str) -> DriftState:
        """Score one prompt now and update the window (synchronous)."""
        if self.scorer is None:
            raise ValueError("this monitor has no scorer; use observe_score(PromptScore)")
        return self.observe_score(self.scorer.score([text])[0])

    def observe_score(self, score: PromptScore) -> DriftState:
        """Add one scored prompt to the window; test the window once it is full."""
        with self._lock:
            self._recent.append(score)
            state = self.state
            state.observed += 1
            state.window = len(self._recent)
            values = {f: np.array([s.feature(f) for s in self._recent]) for f in FEATURES}
            state.window_mean = {f: float(v.mean()) for f, v in values.items()}
            if len(self._recent) < self.window:
                return self.snapshot()
            for f in FEATURES:
                state.ks[f] = ks_statistic(values[f], self.reference.values[f])
                state.p_value[f] = ks_pvalue(state.ks[f], self.window, self.reference.size)
                state.psi[f] = population_stability_index(self.reference.values[f], values[f])
            alarm = any(d > self.threshold for d in state.ks.values())
            if alarm and not state.alarm:
                state.alarms += 1
                LOG.warning(
                    "drift alarm: the last %d prompts differ from the reference (%s; threshold "
                    "%.3f, false-alarm bound %.3g per %d prompts)",
                    self.window,
                    ", ".join(
                        f"{f} KS {state.ks[f]:.3f} p={state.p_value[f]:.2g} "
                        f"mean {state.window_mean[f]:.3f} vs {self.reference.values[f].mean():.3f}"
                        for f in FEATURES
                    ),
                    self.threshold,
                    self.false_alarm_rate,
                    self.window,
                )
            elif state.alarm and not alarm:
                LOG.info("drift alarm cleared after %d prompts", state.observed)
            state.alarm = alarm
            return self.snapshot()

    def snapshot(self) -> DriftState:
        """A copy of the current state (safe to keep while the monitor goes on)."""
        s = self.state
        return DriftState(
            s.observed, s.window, s.alarm, s.alarms, dict(s.ks), dict(s.p_value), dict(s.psi),
            dict(s.window_mean),
        )  # fmt: skip

    # ---- in the background (the server) ------------------------------------------------------

    def start(self) -> DriftMonitor:
        """Score submitted prompts on a daemon thread."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._loop, name="minillm-drift", daemon=True)
            self._worker.start()
        return self

    def submit(self, text: str) -> bool:
        """Queue a prompt for the background scorer; False (and counted) if the queue is full."""
        try:
            self._pending.put_nowait(text)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        return True

    def join(self, timeout: float = 30.0) -> None:
        """Wait until every submitted prompt is scored (tests, notebooks)."""
        done = threading.Event()
        self._pending.put(done)
        if not done.wait(timeout):
            raise TimeoutError(f"the drift monitor did not catch up within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        if self._worker is not None:
            self._pending.put(None)
            self._worker.join(timeout)
            self._worker = None

    def _loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self.observe(item)
            except Exception:  # a prompt that cannot be scored must not stop monitoring
                LOG.exception("the drift monitor could not score a prompt")

    # ---- Prometheus ----------------------------------------------------------------------------

    def metric_lines(self) -> list[str]:
        """The monitor's metrics in Prometheus' text format."""
        with self._lock:
            s, dropped = self.snapshot(), self.dropped
        out = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            out.extend(f"{name}{labels} {value}" for labels, value in samples)

        def per_feature(values: dict[str, float]) -> list[tuple[str, float]]:
            return [(f'{{feature="{f}"}}', values[f]) for f in FEATURES if f in values]

        family("minillm_drift_alarm", "gauge", "1 while the prompt window differs from the "
               "reference (KS test), else 0", [("", int(s.alarm))])  # fmt: skip
        family("minillm_drift_ks_statistic", "gauge", "KS distance between the window and the "
               "reference, per feature", per_feature(s.ks))  # fmt: skip
        family("minillm_drift_ks_threshold", "gauge", "KS distance above which the monitor "
               "alarms", [("", self.threshold)])  # fmt: skip
        family("minillm_drift_p_value", "gauge", "KS p-value of the window, per feature",
               per_feature(s.p_value))  # fmt: skip
        family("minillm_drift_psi", "gauge", "population stability index of the window, per "
               "feature (information only)", per_feature(s.psi))  # fmt: skip
        family("minillm_drift_window_mean", "gauge", "mean feature value over the window",
               per_feature(s.window_mean))  # fmt: skip
        family("minillm_drift_window_prompts", "gauge", "prompts in the window", [("", s.window)])
        family("minillm_drift_prompts_scored_total", "counter", "prompts scored by the drift "
               "monitor", [("", s.observed)])  # fmt: skip
        family("minillm_drift_prompts_dropped_total", "counter", "prompts not scored because "
               "the monitor was behind", [("", dropped)])  # fmt: skip
        family("minillm_drift_alarms_total", "counter", "times the drift alarm went on",
               [("", s.alarms)])  # fmt: skip
        return out
