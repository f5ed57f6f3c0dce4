"""The verdict on one method: respects the wall, leaks, or does no better than a uniform map.

The one rule behind the table colours, the box-plot colours and the reading. Its thresholds and
directions come from the metric registry (:data:`camwall.metrics.METRICS`): a metric with
``respects_at`` says when a method respects the wall (``any_leak``: no map puts any saliency
behind it), one with ``uniform_at`` when it is no better than the uniform control
(``relative_leakage`` at or above 1).
"""

from __future__ import annotations

import enum

from camwall.bench._results import MethodResult
from camwall.metrics import CONTROLS, METRICS, Metric

__all__ = ["Verdict", "classify"]


class Verdict(enum.Enum):
    """A method's verdict; the value is the CSS class of its table cells."""

    RESPECTS = "ok"
    LEAKS = "leak"
    UNIFORM = "bad"  # no better than a map with no information
    CONTROL = "control"  # a control explanation: not judged
    NO_DATA = ""  # no non-empty map yet


def _at_or_better(metric: Metric, value: float, threshold: float) -> bool:
    return value <= threshold if metric.lower_is_better else value >= threshold


def classify(result: MethodResult) -> Verdict:
    """Judge ``result`` from its mean metrics and the registry's thresholds.

    Returns :attr:`Verdict.CONTROL` for a control, :attr:`Verdict.NO_DATA` when no map is
    non-empty, :attr:`Verdict.RESPECTS` when a ``respects_at`` metric is at or better than its
    threshold, :attr:`Verdict.UNIFORM` when a ``uniform_at`` metric is at or worse than its
    threshold (ties count as no better), else :attr:`Verdict.LEAKS`.
    """
    if result.method in CONTROLS:
        return Verdict.CONTROL
    if result.headline.mean is None:
        return Verdict.NO_DATA
    stats = result.stats
    means = {name: stats[name].mean if name in stats else None for name in METRICS.names()}
    for name, metric in METRICS.items():
        mean, at = means[name], metric.respects_at
        if at is not None and mean is not None and _at_or_better(metric, mean, at):
            return Verdict.RESPECTS
    for name, metric in METRICS.items():
        mean, at = means[name], metric.uniform_at
        if (
            at is not None
            and mean is not None
            and (mean == at or not _at_or_better(metric, mean, at))
        ):
            return Verdict.UNIFORM
    return Verdict.LEAKS
