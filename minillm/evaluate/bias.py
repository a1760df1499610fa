"""Bias probes (lesson 09): pairs of sentences that differ in one group word, scored by the
model, and what the gaps can and cannot show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from minillm.evaluate.metrics import sentence_logprob
from minillm.evaluate.stats import Estimate, bootstrap_ci

__all__ = ["BiasProbe", "BiasProbeResult", "bias_probe_gaps"]


@dataclass(frozen=True)
class BiasProbe:
    """Two sentences that differ only in one attribute word.

    ``template`` holds ``{}`` where the attribute goes; ``a`` and ``b`` are the two values, in
    the same order for every probe of a category (for example ``He`` / ``She``). ``favours``
    says which sentence a stereotype would prefer (``"a"`` or ``"b"``), or is None for a
    neutral sentence, where neither should be preferred. Half the stereotype probes of a
    category favour ``a`` and half ``b``, so a model's plain preference for one word (it is
    simply more frequent) cancels out of their mean; the neutral probes measure that plain
    preference on its own.
    """

    category: str
    template: str
    a: str
    b: str
    favours: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        for name in ("category", "template", "a", "b"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"probe {self.id!r}: {name} must be a str")
        if self.template.count("{}") != 1:
            raise ValueError(f"probe {self.id!r}: template must contain exactly one '{{}}'")
        if self.favours not in ("a", "b", None):
            raise ValueError(f"probe {self.id!r}: favours must be 'a', 'b' or None")

    @property
    def kind(self) -> str:
        return "neutral" if self.favours is None else "stereotype"

    @property
    def sentences(self) -> tuple[str, str]:
        return self.template.format(self.a), self.template.format(self.b)

    def oriented(self, gap: float) -> float:
        """``gap`` (log p(a) - log p(b)) turned so that positive means "prefers the stereotype"
        for a stereotype probe, and "prefers ``a``" for a neutral one."""
        return -gap if self.favours == "b" else gap


@dataclass
class BiasProbeResult:
    """Per-probe gaps ``log p(sentence a) - log p(sentence b)`` (nats) and grouped estimates.

    ``groups`` maps ``(category, kind)`` to the mean oriented gap (see :meth:`BiasProbe.oriented`)
    with its bootstrap confidence interval.
    """

    probes: list[BiasProbe]
    gaps: list[float]
    groups: dict[tuple[str, str], Estimate] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "category": category,
                "kind": kind,
                "n": est.n,
                "mean_gap": est.mean,
                "ci_low": est.low,
                "ci_high": est.high,
            }
            for (category, kind), est in sorted(self.groups.items())
        ]


def bias_probe_gaps(
    model: Callable[..., Any],
    tokenizer: Any,
    probes: Sequence[BiasProbe],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    batch_size: int = 16,
) -> BiasProbeResult:
    """Score each probe pair and aggregate per (category, kind) with a bootstrap interval.

    For stereotype probes a positive mean says the model prefers stereotype-consistent
    sentences; an interval that contains 0 says this probe set cannot tell.
    """
    if not probes:
        raise ValueError("no bias probes to score")
    sentences = [s for probe in probes for s in probe.sentences]
    logprobs = sentence_logprob(model, tokenizer, sentences, batch_size=batch_size)
    gaps = [logprobs[2 * i] - logprobs[2 * i + 1] for i in range(len(probes))]
    grouped: dict[tuple[str, str], list[float]] = {}
    for probe, gap in zip(probes, gaps, strict=True):
        grouped.setdefault((probe.category, probe.kind), []).append(probe.oriented(gap))
    groups = {
        key: bootstrap_ci(vals, confidence=confidence, n_resamples=n_resamples, seed=seed)
        for key, vals in grouped.items()
    }
    return BiasProbeResult(list(probes), gaps, groups)
