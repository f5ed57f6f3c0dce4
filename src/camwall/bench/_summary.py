"""Aggregates read from the store: the numbers behind every table, figure and sentence.

``summary.json`` schema (all leakage values are fractions in [0, 1]; ``null`` = not defined)::

    {
      "schema": "camwall-bench-summary/1",
      "model": MODEL,                           # the walled model the top-level tables refer to
      "datasets": {DATASET: {METHOD: {"mean", "std", "n", "empty"}}},   # wall_leakage (mu)
      "metrics":  {MODEL: {DATASET: {METHOD: {METRIC: {"mean", "std", "n", "empty"}}}}},
      "seconds":  {MODEL: {DATASET: {METHOD: mean seconds per image}}},
      "accuracy": {MODEL: {DATASET: {"accuracy", "correct", "n", "walled"}}},
      "dead_zone": {MODEL: {"rows": [first, last] | null, "fraction", "pixels",
                            "input_size": [H, W], "uniform_mu"}},
      "paper": {METHOD: {"STACK-MIX": mu, "STACK-GEN": mu}},            # the paper's Table 1
      "config": {...}, "versions": {...}, "runs": [{"started", "finished"}]
    }

``n`` counts images whose map is not empty; ``empty`` counts all-zero maps (their leakage is
undefined and is left out of the mean).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from camwall.bench._store import Store
from camwall.metrics import CONTROLS, METRICS, summarize

__all__ = ["PAPER", "PAPER_DATASETS", "build_summary", "paper_column"]

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


def _clean(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _stats(values: list[float]) -> dict[str, Any]:
    s = summarize(values)
    return {"mean": _clean(s.mean), "std": _clean(s.std), "n": s.n, "empty": s.empty}


def build_summary(store: Store) -> dict[str, Any]:
    """Read every row of ``store`` and aggregate it (see the module docstring for the schema)."""
    config = store.config() or {}
    models = store.info("models")
    datasets = store.info("datasets")
    rows = store.results()
    methods: list[str] = list(config.get("methods") or [])
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])

    values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    seconds: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        for name in METRICS.names():
            values[(r["model"], r["dataset"], r["method"], name)].append(r[name])
        seconds[(r["model"], r["dataset"], r["method"])].append(r["seconds"])

    walled = [m for m, info in models.items() if info.get("walled")]
    metrics: dict[str, Any] = {}
    secs: dict[str, Any] = {}
    for m in walled:
        metrics[m] = {}
        secs[m] = {}
        for d in datasets:
            per: dict[str, Any] = {}
            for meth in methods:
                if (m, d, meth, "wall_leakage") not in values:
                    continue
                per[meth] = {n: _stats(values[(m, d, meth, n)]) for n in METRICS.names()}
                t = seconds[(m, d, meth)]
                secs[m].setdefault(d, {})[meth] = sum(t) / len(t)
            metrics[m][d] = per

    primary = walled[0] if walled else None
    top = {
        d: {meth: v["wall_leakage"] for meth, v in per.items()}
        for d, per in (metrics.get(primary, {}) if primary else {}).items()
    }

    accuracy: dict[str, Any] = defaultdict(dict)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for p in store.predictions():
        c = counts[(p["model"], p["dataset"])]
        c[0] += int(p["label"] == p["predicted"])
        c[1] += 1
    for (m, d), (correct, n) in counts.items():
        accuracy[m][d] = {
            "accuracy": correct / n if n else None,
            "correct": correct,
            "n": n,
            "walled": bool(models.get(m, {}).get("walled")),
        }

    dead: dict[str, Any] = {}
    for m in walled:
        info = models[m]
        h, w = info["input_size"]
        frac = float(info["dead_fraction"])
        dead[m] = {
            "rows": info.get("dead_rows"),
            "fraction": frac,
            "pixels": round(frac * h * w),
            "input_size": [h, w],
            "uniform_mu": math.sqrt(frac),
        }

    return {
        "schema": SCHEMA,
        "model": primary,
        "methods": methods,
        "controls": [m for m in methods if m in CONTROLS],
        "datasets": top,
        "metrics": metrics,
        "seconds": secs,
        "accuracy": dict(accuracy),
        "dead_zone": dead,
        "paper": {
            meth: {d: {"mean": v[0], "std": v[1]} for d, v in per.items()}
            for meth, per in PAPER.items()
        },
        "paper_columns": {d: paper_column(d) for d in datasets},
        "dataset_info": datasets,
        "model_info": {
            m: {k: v for k, v in info.items() if k != "dead_zone_png"} for m, info in models.items()
        },
        "config": config,
        "versions": (store.runs() or [{}])[-1].get("versions", {}),
        "runs": [{"started": r["started"], "finished": r["finished"]} for r in store.runs()],
        "rows": len(rows),
    }
