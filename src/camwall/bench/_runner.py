"""The benchmark loop: predictions, saliency maps, metrics, rows committed as they are computed.

A run is a :class:`~camwall.bench._plan.BenchPlan` (built once from the arguments), a
:class:`~camwall.bench._session.Session` (out folder, lock, shards, store), and per batch one
:class:`~camwall.bench._batch.Batch` that the method runners (:mod:`camwall.bench._compute`) map
and :func:`~camwall.bench._measure.measure` turns into rows. Controls and metrics depend only on
the image, never on the batch or shard, so a torchrun run's merged results equal a
single-process run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from camwall.bench._batch import Batch, Prediction, batches, predict
from camwall.bench._compute import Runner, runners
from camwall.bench._measure import input_figures, measure
from camwall.bench._plan import (
    FIGURE_IMAGES,
    BenchDataset,
    BenchModel,
    BenchPlan,
    BenchSettings,
    check_inputs,
    explained_cell,
    paired,
)
from camwall.bench._session import Session, check_out_dir, open_session, shard_store_path
from camwall.bench._store import STORE_NAME, BatchRecord, Store
from camwall.errors import CamwallError
from camwall.runtime import DistInfo, resolve_device

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = [
    "FIGURE_IMAGES",
    "BenchDataset",
    "BenchModel",
    "Loader",
    "check_out_dir",
    "explained_cell",
    "paired",
    "resolve_device",
    "run_bench",
    "shard_store_path",
]

Loader = Callable[[DistInfo], tuple[Sequence[BenchModel], Sequence[BenchDataset]]]
"""Loads a run's models and datasets once ``out`` is locked (the CLI's: checkpoints, training)."""


def run_bench(
    models: Sequence[BenchModel] | Loader,
    datasets: Sequence[BenchDataset] | None,
    methods: Sequence[str],
    out: str | Path,
    *,
    config: dict[str, Any] | None = None,
    resume: bool = False,
    report: bool = True,
    **settings: Unpack[BenchSettings],
) -> Path:
    """Run the wall benchmark and write the store (and, on rank 0, the report) into ``out``.

    The CAM methods of a batch are computed together in one :func:`camwall.cams.compute_cams`
    call (gradient methods share one forward and one backward pass); explainers from other
    sources (``captum:NAME``, ``gradcam:NAME``, ``torchcam:NAME``, ``py:module:function``, see
    :mod:`camwall.explainers`) run per batch through their adapter, each timed alone. A batch's
    rows are stored in one transaction: an explainer that fails stores nothing of its batch,
    and the batches stored before are kept. ``out`` is locked for the whole run.

    Args:
        models: walled models to test (and baselines, ``walled=False``, for accuracy only), or
            a :data:`Loader` called once ``out`` is locked (then ``datasets`` is None and
            ``config`` is required).
        datasets: image sets; every image size must match every walled model's dead zone.
        methods: CAM method names (:data:`camwall.cams.METHODS`), controls
            (:data:`camwall.metrics.CONTROLS`) and explainer names
            (:data:`camwall.explainers.EXPLAINERS`, or ``py:package.module:function``).
        out: output folder; the store is ``out/results.sqlite``.
        config: the result-defining configuration recorded with the run (and compared on
            ``resume``); by default built from the names above.
        resume: continue a store written with the same config; without it an existing store
            is kept aside as ``results.<started UTC>.sqlite`` (never deleted) and a fresh one
            started.
        report: write the report files when done.
        **settings: the :meth:`BenchPlan.build` keywords (``device``, ``batch_size``, ``seed``,
            ``figure_images``, ``progress``, ``cam_options``, ``explainer_options``,
            ``explainers``), documented there.

    Returns:
        The path of the store.
    """
    plan = BenchPlan.build(methods, **settings)
    loaded = None if callable(models) else (list(models), list(datasets or []))
    if loaded is not None:
        check_inputs(*loaded)
        config = config if config is not None else plan.config(*loaded)
    elif config is None:
        raise CamwallError("run_bench: a loader of models needs the run's config.")
    out = check_out_dir(out)
    with open_session(out, plan.device, resume) as session:
        session.check_config(config)  # before any model is loaded or trained
        if loaded is None:
            assert callable(models)
            loaded = _load(models, session.dist)
        plan = plan.sized(loaded[0])
        config = {**config, "device": str(plan.device), "batch_size": plan.batch_size}
        _run(session, plan, {**config, "out": str(out)}, *loaded)
        session.finish(report)
    return out / STORE_NAME


def _load(load: Loader, dist: DistInfo) -> tuple[list[BenchModel], list[BenchDataset]]:
    models, datasets = load(dist)
    check_inputs(models, datasets)
    return list(models), list(datasets)


def _run(
    session: Session,
    plan: BenchPlan,
    config: dict[str, Any],
    models: Sequence[BenchModel],
    datasets: Sequence[BenchDataset],
) -> None:
    """Predictions for every model; maps and metrics for every walled model, batch by batch."""
    store = session.open(config, models, datasets)
    torch.manual_seed(plan.seed)
    try:
        for bm in models:
            net = bm.model.to(plan.device).eval()
            for ds in (d for d in datasets if paired(bm, d)):
                mine = session.mine(len(ds.labels))
                preds = predict(store, bm, net, ds, mine, plan)
                if bm.walled:
                    _maps(store, plan, bm, ds, mine, preds)
    finally:
        store.close()


def _maps(
    store: Store,
    plan: BenchPlan,
    bm: BenchModel,
    ds: BenchDataset,
    mine: list[int],
    preds: dict[int, Prediction],
) -> None:
    """Compute, measure and store every method's maps of ``mine`` still missing, batch by batch
    (after the input figures)."""
    store.add_batch([], input_figures(bm, ds, mine, plan.figure_images, plan.seed))
    todo = {m: set(mine) - store.done(bm.name, ds.name, m) for m in plan.methods}
    kinds = runners(plan, bm)
    with _bar(ds, mine, todo, plan) as bar:
        for batch in batches(bm, bm.model, ds, todo, preds, plan):
            maps, seconds, records = _compute(kinds, batch)
            rows, figures = measure(batch, maps, seconds, plan.figure_images)
            store.add_batch(rows, figures, records)
            bar.update(len(batch.ids))


def _compute(
    kinds: list[Runner], batch: Batch
) -> tuple[dict[str, Any], dict[str, float], list[BatchRecord]]:
    """Every runner's maps and seconds of ``batch``, and their timing records."""
    maps: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    records: list[BatchRecord] = []
    for kind in kinds:
        more, times = kind.run(batch)
        maps.update(more)
        seconds.update(times)
        records += kind.records(batch, times)
    return maps, seconds, records


def _bar(ds: BenchDataset, mine: list[int], todo: dict[str, set[int]], plan: BenchPlan) -> Any:
    from tqdm import tqdm

    left = len(set().union(*todo.values()))
    return tqdm(
        total=len(mine),
        initial=len(mine) - left,
        desc=f"{ds.name} ({len(plan.methods)} methods)",
        unit="img",
        disable=not plan.progress,
        leave=True,
        dynamic_ncols=True,
        file=sys.stderr,
    )
