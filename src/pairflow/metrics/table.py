"""The one table of sample metrics: key, labels, number format, direction.

Every report, comparison and log that shows sample metrics reads this table, so a metric is
added (or relabelled) in one place.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Metric", "METRICS", "METRIC_KEYS", "CONDITIONAL_KEYS"]


class Metric(NamedTuple):
    key: str  # the key in evaluate_samples' dict and in eval JSON "metrics"
    label: str  # a report's row label
    column: str  # a comparison table's column header
    spec: str  # number format
    lower_is_better: bool
    conditional_only: bool = False  # only for models asked for labels


METRICS: tuple[Metric, ...] = (
    Metric("fd", "Fréchet distance (lower is better)", "FD", ".3f", True),
    Metric("inception_score", "inception score (max 100)", "IS", ".2f", False),
    Metric("precision", "precision (k=3)", "precision", ".3f", False),
    Metric("recall", "recall (k=3)", "recall", ".3f", False),
    Metric("coverage", "coverage of the 100 pair classes", "coverage", ".2f", False),
    Metric("kl_uniform", "KL of the class histogram to uniform (nats)", "KL", ".4f", True),
    Metric(
        "conditional_accuracy",
        "conditional accuracy (mean over pairs)",
        "cond. accuracy",
        ".3f",
        False,
        True,
    ),  # fmt: skip
    Metric(
        "conditional_accuracy_min",
        "conditional accuracy (worst pair)",
        "worst pair",
        ".3f",
        False,
        True,
    ),  # fmt: skip
)

METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS if not m.conditional_only)
"""The scalar metrics every sample set gets, in table order."""

CONDITIONAL_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS if m.conditional_only)
"""The metrics of label-asked samples."""
