"""Linear probes (lesson 13): what each layer's residual stream encodes, against a
shuffled-label control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ProbeResult", "probe_layers"]


@dataclass
class ProbeResult:
    """Held-out accuracy of a logistic-regression probe per layer, beside its controls.

    Attributes:
        accuracy: (n_layers,) with the true labels.
        control: (n_layers,) with the training labels shuffled (what the probe can learn from
            structure in the features alone).
        majority: accuracy of always answering the most common training label.
    """

    accuracy: np.ndarray
    control: np.ndarray
    majority: float


def probe_layers(
    features: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    *,
    groups: Sequence[int] | np.ndarray | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_iter: int = 2000,
) -> ProbeResult:
    """Fit a logistic-regression probe on each layer's features and score it on held-out rows.

    The rows are split once (the same split for every layer); with ``groups`` (for example the
    line each token came from) whole groups go to one side, so a probe cannot pass by
    recognising a line it saw. Features are standardised on the training rows. The control
    fits the same probe to shuffled training labels.

    Args:
        features: (n_layers, n_rows, dim).
        labels: (n_rows,) integer classes.
        groups: optional (n_rows,) group ids for the split.
        test_fraction: share of rows (or groups) held out.
        seed: the split and the shuffle.
        max_iter: iterations for scikit-learn's solver.
    """
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as err:  # pragma: no cover - scikit-learn is in the course extra
        raise ImportError("linear probes need scikit-learn: pip install -e '.[course]'") from err
    x = (
        features.detach().float().numpy()
        if isinstance(features, torch.Tensor)
        else np.asarray(features)
    )
    y = np.asarray(labels)
    if x.ndim != 3 or x.shape[1] != len(y):
        raise ValueError(
            f"features must be (n_layers, n_rows, dim) with n_rows = len(labels) = {len(y)}, "
            f"got {x.shape}"
        )
    if len(np.unique(y)) < 2:
        raise ValueError("labels must contain at least two classes")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if groups is None:
        splitter = StratifiedShuffleSplit(1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(x[0], y))
    else:
        splitter = GroupShuffleSplit(1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(x[0], y, np.asarray(groups)))
    shuffled = np.random.default_rng(seed).permutation(y[train])
    values, counts = np.unique(y[train], return_counts=True)
    majority = float(np.mean(y[test] == values[counts.argmax()]))

    def fit_score(layer: np.ndarray, train_labels: np.ndarray) -> float:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        probe.fit(layer[train], train_labels)
        return float(probe.score(layer[test], y[test]))

    accuracy = np.array([fit_score(layer, y[train]) for layer in x])
    control = np.array([fit_score(layer, shuffled) for layer in x])
    return ProbeResult(accuracy, control, majority)
