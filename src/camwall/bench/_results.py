"""Typed results read from the store: what every table, figure and sentence is drawn from.

:func:`load_results` reads a :class:`~camwall.bench._store.Store` once into frozen dataclasses:
one :class:`ModelResult` per walled model, holding one :class:`DatasetResult` per dataset,
holding one :class:`MethodResult` per method. Every level knows how many images the run asked
for (``expected``, from the dataset description the run records before any work) and how many
the store holds, so a store of an interrupted run is read as it is and marked incomplete.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camwall.bench._methods import family_of, group_by_family
from camwall.bench._store import Store, png_to_array
from camwall.metrics import METRICS, summarize

__all__ = [
    "HEADLINE",
    "Accuracy",
    "BenchResults",
    "DatasetResult",
    "DeadZone",
    "MethodResult",
    "ModelResult",
    "Stats",
    "load_results",
    "shown_metrics",
]

HEADLINE = "wall_leakage"
"""The metric of the tables, box plots and figure labels (the paper's mu)."""

Key = tuple[str, str, str]  # (model, dataset, method)


@dataclass(frozen=True)
class Stats:
    """One metric over images: mean and population std of the non-empty values (None if there
    are none), ``n`` non-empty values and ``empty`` all-zero maps left out."""

    mean: float | None
    std: float | None
    n: int
    empty: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """Aggregate per-image values (NaN = empty map) with :func:`camwall.metrics.summarize`."""
        s = summarize(list(values)) if values else None
        if s is None:
            return cls(None, None, 0, 0)
        return cls(_finite(s.mean), _finite(s.std), s.n, s.empty)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "empty": self.empty}


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass(frozen=True)
class MethodResult:
    """One method on one (model, dataset).

    Attributes:
        method: the method's name.
        stats: metric name -> :class:`Stats`, for every metric of :data:`METRICS`.
        seconds: mean seconds per image (0.0 when there is no row).
        leakage: per-image :data:`HEADLINE` values in image order, NaN for empty maps.
        expected: images the run asked for.
    """

    method: str
    stats: Mapping[str, Stats]
    seconds: float
    leakage: tuple[float, ...]
    expected: int

    @property
    def images(self) -> int:
        """Images with a result row."""
        return len(self.leakage)

    @property
    def complete(self) -> bool:
        return self.images >= self.expected

    @property
    def headline(self) -> Stats:
        return self.stats[HEADLINE]


@dataclass(frozen=True)
class DatasetResult:
    """One dataset for one walled model.

    Attributes:
        dataset: the dataset's name.
        expected: images the run asked for.
        methods: method -> result, for every method of the run (rowless ones included), in
            the run's order.
        predictions: image -> ``(label, predicted class)``.
        figures: ``(image, "image" | method)`` -> PNG of the input image or of its map.
    """

    dataset: str
    expected: int
    methods: Mapping[str, MethodResult]
    predictions: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    figures: Mapping[tuple[int, str], bytes] = field(default_factory=dict)

    @property
    def images(self) -> int:
        """Images done: the most rows any method has."""
        return max((r.images for r in self.methods.values()), default=0)

    @property
    def stored(self) -> dict[str, MethodResult]:
        """The methods with at least one row."""
        return {m: r for m, r in self.methods.items() if r.images}

    @property
    def incomplete(self) -> list[MethodResult]:
        return [r for r in self.methods.values() if not r.complete]


@dataclass(frozen=True)
class DeadZone:
    """A walled model's dead zone: ``mask`` ``H x W`` bool, the band of ``rows`` [first, last]
    if it is one, the fraction and count of dead pixels, and ``uniform_mu`` =
    sqrt(fraction), the leakage of a uniform map."""

    rows: list[int] | None
    fraction: float
    pixels: int
    input_size: list[int]
    uniform_mu: float
    mask: np.ndarray = field(compare=False, repr=False)
    per_output: bool = False
    """True for a grid model: each image's dead zone is its explained cell's (``mask`` and the
    numbers are cell 0's; the figures draw each image's own)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "fraction": self.fraction,
            "pixels": self.pixels,
            "input_size": self.input_size,
            "uniform_mu": self.uniform_mu,
        }


@dataclass(frozen=True)
class ModelResult:
    """One walled model: its dead zone and one :class:`DatasetResult` per dataset it reads
    (whose task is the model's); ``kind`` (``CNN``, ``grid``, ``ViT``, ...) groups the
    overview table's columns."""

    name: str
    dead_zone: DeadZone
    datasets: Mapping[str, DatasetResult]
    kind: str = "CNN"
    task: str = "single"

    @property
    def complete(self) -> bool:
        return not any(ds.incomplete for ds in self.datasets.values())


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of one model on one dataset against the composites' labels."""

    accuracy: float | None
    correct: int
    n: int
    walled: bool


@dataclass(frozen=True)
class BenchResults:
    """Everything a store holds, typed. ``models`` are the walled models, in the run's order;
    the first is the one the top-level tables of ``summary.json`` refer to."""

    methods: tuple[str, ...]
    models: tuple[ModelResult, ...]
    accuracy: Mapping[str, Mapping[str, Accuracy]]
    dataset_info: Mapping[str, dict[str, Any]]
    model_info: Mapping[str, dict[str, Any]]
    config: Mapping[str, Any]
    versions: Mapping[str, str]
    runs: tuple[dict[str, Any], ...]
    rows: int
    families: Mapping[str, str] = field(default_factory=dict)

    @property
    def grouped(self) -> bool:
        """Whether the rows are shown under family headings: a method of a family other than
        CAM and control is present (a run of camwall's CAMs and controls reads as before)."""
        return grouped(self.families)

    def by_family(self, methods: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
        """``(family, methods)`` in family order, for ``methods`` (default: all)."""
        groups: dict[str, list[str]] = {}
        for m in self.methods if methods is None else methods:
            groups.setdefault(self.families.get(m, "other"), []).append(m)
        return list(groups.items())

    @property
    def primary(self) -> ModelResult | None:
        return self.models[0] if self.models else None

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.dataset_info)

    @property
    def complete(self) -> bool:
        return all(m.complete for m in self.models)


def grouped(families: Mapping[str, str]) -> bool:
    """Whether rows are grouped by family: some method is neither a CAM nor a control."""
    return any(f not in ("cam", "control") for f in families.values())


def load_results(store: Store) -> BenchResults:
    """Read the rows, predictions, descriptions and figures of ``store`` (typed)."""
    config = store.config() or {}
    models = store.info("models")
    datasets = store.info("datasets")
    rows = store.results()
    methods: list[str] = list(config.get("methods") or [])
    methods += [m for m in dict.fromkeys(r["method"] for r in rows) if m not in methods]
    families = {m: family_of(m, config) for m in methods}
    if grouped(families):
        methods = group_by_family(methods, config)  # else the run's order, as always
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["dataset"], r["method"])].append(r)
    preds = store.predictions()
    figures = store.figures()
    walled = [
        _model_result(name, info, datasets, methods, groups, preds, figures)
        for name, info in models.items()
        if info.get("walled")
    ]
    runs = store.runs()
    return BenchResults(
        methods=tuple(methods),
        models=tuple(walled),
        accuracy=_accuracy(preds, models),
        dataset_info=datasets,
        model_info={
            m: {k: v for k, v in info.items() if k != "dead_zone_png"} for m, info in models.items()
        },
        config=config,
        versions=(runs or [{}])[-1].get("versions", {}),
        runs=tuple({"started": r["started"], "finished": r["finished"]} for r in runs),
        rows=len(rows),
        families=families,
    )


def _model_result(
    name: str,
    info: dict[str, Any],
    datasets: Mapping[str, dict[str, Any]],
    methods: Sequence[str],
    groups: Mapping[Key, list[dict[str, Any]]],
    preds: list[dict[str, Any]],
    figures: Mapping[tuple[str, str, int, str], bytes],
) -> ModelResult:
    per: dict[str, DatasetResult] = {}
    task = str(info.get("task", "single"))
    for d, dinfo in datasets.items():
        if str(dinfo.get("task", "single")) != task:
            continue  # a dataset this model cannot read (see bench._runner.paired)
        expected = int(dinfo.get("n") or 0)
        per[d] = DatasetResult(
            dataset=d,
            expected=expected,
            methods={
                meth: _method_result(meth, groups.get((name, d, meth), []), expected)
                for meth in methods
            },
            predictions={
                p["image"]: (p["label"], p["predicted"])
                for p in preds
                if p["model"] == name and p["dataset"] == d
            },
            figures={(i, k): png for (m, dd, i, k), png in figures.items() if (m, dd) == (name, d)},
        )
    kind = str(info.get("kind") or "CNN")
    return ModelResult(name=name, dead_zone=_dead_zone(info), datasets=per, kind=kind, task=task)


def _method_result(method: str, rows: list[dict[str, Any]], expected: int) -> MethodResult:
    seconds = [r["seconds"] for r in rows]
    return MethodResult(
        method=method,
        stats={n: Stats.of([r[n] for r in rows]) for n in METRICS.names()},
        seconds=sum(seconds) / len(seconds) if seconds else 0.0,
        leakage=tuple(r[HEADLINE] for r in rows),
        expected=expected,
    )


def _dead_zone(info: dict[str, Any]) -> DeadZone:
    h, w = info["input_size"]
    frac = float(info["dead_fraction"])
    return DeadZone(
        rows=info.get("dead_rows"),
        fraction=frac,
        pixels=round(frac * h * w),
        input_size=[h, w],
        uniform_mu=math.sqrt(frac),
        mask=png_to_array(bytes.fromhex(info["dead_zone_png"])) > 0.5,
        per_output=info.get("task", "single") == "grid",
    )


def _accuracy(
    preds: list[dict[str, Any]], models: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Accuracy]]:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for p in preds:
        c = counts[(p["model"], p["dataset"])]
        c[0] += int(p["label"] == p["predicted"])
        c[1] += 1
    out: dict[str, dict[str, Accuracy]] = defaultdict(dict)
    for (m, d), (correct, n) in counts.items():
        walled = bool(models.get(m, {}).get("walled"))
        out[m][d] = Accuracy(correct / n if n else None, correct, n, walled)
    return dict(out)


def shown_metrics(ds: DatasetResult) -> list[str]:
    """The metrics of the "all metrics" tables: every metric of :data:`METRICS`, but those of
    a target region (``zone == "target"``, e.g. the grid pointing game) only where they have
    values (grid models)."""
    return [
        n
        for n in METRICS.names()
        if METRICS.get(n).zone != "target" or any(r.stats[n].n for r in ds.stored.values())
    ]
