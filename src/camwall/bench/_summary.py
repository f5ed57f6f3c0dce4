"""Aggregates read from the store: the numbers behind every table, figure and sentence.

``summary.json`` schema (all leakage values are fractions in [0, 1]; ``null`` = not defined)::

    {
      "schema": "camwall-bench-summary/1",
      "model": MODEL,                           # the first walled model (--model)
      "methods": [METHOD, ...], "controls": [METHOD, ...],
      "datasets": {DATASET: {METHOD: {"mean", "std", "n", "empty"}}},   # wall_leakage (mu)
      "metrics":  {MODEL: {DATASET: {METHOD: {METRIC: {"mean", "std", "n", "empty"}}}}},
      "seconds":  {MODEL: {DATASET: {METHOD: mean seconds per image}}},
      "accuracy": {MODEL: {DATASET: {"accuracy", "correct", "n", "walled"}}},
      "dead_zone": {MODEL: {"rows": [first, last] | null, "fraction", "pixels",
                            "input_size": [H, W], "uniform_mu"}},
      "paper": {METHOD: {"STACK-MIX": {"mean", "std"}, "STACK-GEN": {...}}},  # Table 1
      "paper_columns": {DATASET: "STACK-MIX" | "STACK-GEN" | null},
      "dataset_info": {DATASET: {...}}, "model_info": {MODEL: {...}},
      "config": {...}, "versions": {...}, "runs": [{"started", "finished"}], "rows": int
    }

``datasets`` holds the first walled model's mu; ``metrics``, ``seconds`` and ``dead_zone`` hold
every walled model. A method appears only where the store has rows for it.

``n`` counts images whose map is not empty; ``empty`` counts all-zero maps (their leakage is
undefined and is left out of the mean).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from camwall.bench._results import BenchResults, ModelResult, load_results, shown_metrics
from camwall.bench._store import Store
from camwall.metrics import CONTROLS

__all__ = ["PAPER", "PAPER_DATASETS", "build_summary", "paper_column", "summary_json"]

SCHEMA = "camwall-bench-summary/1"

PAPER_DATASETS = ("STACK-MIX", "STACK-GEN")

# Table 1 of the paper (walled VGG16 on ImageNet, predicted class, mean and std over 100
# images), as fractions. Source: /work/shared/spec/paper.md (the talk's slides).
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "gradcam": {"STACK-MIX": (0.227, 0.134), "STACK-GEN": (0.216, 0.116)},
    "gradcampp": {"STACK-MIX": (0.288, 0.081), "STACK-GEN": (0.285, 0.079)},
    "xgradcam": {"STACK-MIX": (0.238, 0.090), "STACK-GEN": (0.228, 0.090)},
    "scorecam": {"STACK-MIX": (0.199, 0.103), "STACK-GEN": (0.185, 0.106)},
    "opticam": {"STACK-MIX": (0.327, 0.079), "STACK-GEN": (0.320, 0.078)},
    "ablationcam": {"STACK-MIX": (0.210, 0.099), "STACK-GEN": (0.208, 0.096)},
    "eigencam": {"STACK-MIX": (0.517, 0.197), "STACK-GEN": (0.558, 0.216)},
    "hirescam": {"STACK-MIX": (0.0, 0.0), "STACK-GEN": (0.0, 0.0)},
    # The no-information reference: sqrt(54 / 224) for the bottom 54 of 224 rows.
    "uniform": {"STACK-MIX": (math.sqrt(54 / 224), 0.0), "STACK-GEN": (math.sqrt(54 / 224), 0.0)},
}


def paper_column(dataset: str) -> str | None:
    """The paper's dataset that ``dataset`` is the analogue of, by name, or None."""
    low = dataset.lower()
    if "mix" in low:
        return "STACK-MIX"
    if "gen" in low or "pair" in low:
        return "STACK-GEN"
    return None


def build_summary(store: Store) -> dict[str, Any]:
    """Read every row of ``store`` and aggregate it (see the module docstring for the schema)."""
    return summary_json(load_results(store))


def summary_json(results: BenchResults) -> dict[str, Any]:
    """The ``summary.json`` dict of ``results`` (schema in the module docstring).

    Only methods with at least one row appear under ``datasets``, ``metrics`` and ``seconds``.
    """
    primary = results.primary
    return {
        "schema": SCHEMA,
        "model": primary.name if primary else None,
        "methods": list(results.methods),
        "controls": [m for m in results.methods if m in CONTROLS],
        "datasets": {
            d: {meth: r.headline.to_json() for meth, r in ds.stored.items()}
            for d, ds in (primary.datasets.items() if primary else ())
        },
        "metrics": {m.name: _metrics(m) for m in results.models},
        "seconds": {m.name: _seconds(m) for m in results.models},
        "accuracy": {
            m: {d: asdict(a) for d, a in per.items()} for m, per in results.accuracy.items()
        },
        "dead_zone": {m.name: m.dead_zone.to_json() for m in results.models},
        "paper": {
            meth: {d: {"mean": v[0], "std": v[1]} for d, v in per.items()}
            for meth, per in PAPER.items()
        },
        "paper_columns": {d: paper_column(d) for d in results.datasets},
        "dataset_info": dict(results.dataset_info),
        "model_info": dict(results.model_info),
        "config": dict(results.config),
        "versions": dict(results.versions),
        "runs": [dict(r) for r in results.runs],
        "rows": results.rows,
    }


def _metrics(model: ModelResult) -> dict[str, Any]:
    return {
        d: {
            meth: {n: r.stats[n].to_json() for n in shown_metrics(ds)}
            for meth, r in ds.stored.items()
        }
        for d, ds in model.datasets.items()
    }


def _seconds(model: ModelResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d, ds in model.datasets.items():
        for meth, r in ds.stored.items():
            out.setdefault(d, {})[meth] = r.seconds
    return out
