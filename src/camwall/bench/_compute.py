"""The maps of one batch: one runner per kind of method, each ``run(batch) -> (maps, seconds)``.

- :class:`CamRunner`: every engine CAM of the batch in ONE :func:`camwall.cams.compute_cams`
  call (gradient methods share one forward and one backward pass); each CAM's seconds are the
  shared call's, and one :class:`BatchRecord` records it.
- :class:`ControlRunner`: the controls (:data:`camwall.metrics.CONTROLS`), each timed alone.
- :class:`ExplainerRunner`: the other explainers (captum, grad-cam, torch-cam, ``py:``, given
  objects), one adapter call each, each timed alone and recorded.

``maps`` are ``{method: B x H x W}``; ``seconds`` are ``{method: wall seconds of its call on the
whole batch}`` (CUDA synchronised).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from camwall.bench._batch import Batch
from camwall.bench._plan import BenchModel, BenchPlan
from camwall.bench._store import BatchRecord

__all__ = [
    "CamRunner",
    "ControlRunner",
    "ExplainerRunner",
    "Runner",
    "runners",
]

Maps = dict[str, Tensor]
Seconds = dict[str, float]
ComputeFn = Callable[..., dict[str, Tensor]]


def _cam_fn() -> ComputeFn:
    """The engine's :func:`camwall.cams.compute_cams` (a seam the tests wrap)."""
    from camwall.cams import compute_cams

    return compute_cams


def timed(dev: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds (CUDA synchronised)."""
    start = time.perf_counter()
    value = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return value, time.perf_counter() - start


class Runner(Protocol):
    """Computes the maps of its methods on a batch."""

    def run(self, batch: Batch) -> tuple[Maps, Seconds]: ...

    def records(self, batch: Batch, seconds: Seconds) -> list[BatchRecord]: ...


class CamRunner:
    """The engine CAMs of ``methods``, all in one ``compute_cams`` call per batch."""

    def __init__(self, methods: Sequence[str], plan: BenchPlan) -> None:
        self.methods = tuple(methods)
        self.plan = plan

    def run(self, batch: Batch) -> tuple[Maps, Seconds]:
        cams = [m for m in batch.methods if m in self.methods]
        if not cams:
            return {}, {}
        from camwall.cams import chunk_options  # the chunk facts live on the method classes

        options = {**chunk_options(batch.x, cams), **self.plan.cam_options}
        if "finercam" in cams:  # FinerCAM's comparison for the explained class, as grad-cam's
            options.setdefault("finercam_target_idx", list(batch.targets))
        compute, layer, targets = _cam_fn(), batch.model.target_layer, list(batch.targets)
        out, t = timed(
            self.plan.device,
            lambda: compute(batch.net, batch.x, layer, cams, targets=targets, **options),
        )
        return {m: out[m] for m in cams}, dict.fromkeys(cams, t)

    def records(self, batch: Batch, seconds: Seconds) -> list[BatchRecord]:
        cams = tuple(m for m in batch.methods if m in self.methods)
        if not cams:
            return []
        return [
            BatchRecord(batch.model.name, batch.dataset.name, batch.ids, cams, seconds[cams[0]])
        ]


class ControlRunner:
    """The controls of ``methods``, each ``control(x, ids, seed)``, timed alone."""

    def __init__(self, methods: Sequence[str], plan: BenchPlan) -> None:
        self.methods = tuple(methods)
        self.plan = plan

    def run(self, batch: Batch) -> tuple[Maps, Seconds]:
        from camwall.metrics import CONTROLS

        maps: Maps = {}
        seconds: Seconds = {}
        ids = list(batch.ids)
        for m in (m for m in batch.methods if m in self.methods):
            control = CONTROLS.get(m)
            call = functools.partial(control, batch.x, ids, self.plan.seed)
            maps[m], seconds[m] = timed(self.plan.device, call)
        return maps, seconds

    def records(self, batch: Batch, seconds: Seconds) -> list[BatchRecord]:
        return []


class ExplainerRunner:
    """The other explainers of ``methods``, bound once to model ``bm``'s target layer."""

    def __init__(self, methods: Sequence[str], plan: BenchPlan, bm: BenchModel) -> None:
        from camwall.bench._methods import bound_explainers

        self.plan = plan
        self.explainers = bound_explainers(
            methods, bm.target_layer, plan.explainer_options, plan.explainers, plan.seed
        )

    def run(self, batch: Batch) -> tuple[Maps, Seconds]:
        from camwall.bench._methods import run_explainer

        maps: Maps = {}
        seconds: Seconds = {}
        targets = list(batch.targets)
        for m in (m for m in batch.methods if m in self.explainers):
            fn = self.explainers[m]
            call = functools.partial(run_explainer, fn, batch.net, batch.x, targets, batch.where)
            maps[m], seconds[m] = timed(self.plan.device, call)
        return maps, seconds

    def records(self, batch: Batch, seconds: Seconds) -> list[BatchRecord]:
        m, d = batch.model.name, batch.dataset.name
        return [BatchRecord(m, d, batch.ids, (k,), t) for k, t in seconds.items()]


def runners(plan: BenchPlan, bm: BenchModel) -> list[Runner]:
    """The runners of the plan's methods for model ``bm``: CAMs, controls, other explainers
    (in that order: the order of the result rows and of the random draws)."""
    return [
        CamRunner(plan.cams, plan),
        ControlRunner(plan.controls, plan),
        ExplainerRunner(plan.others, plan, bm),
    ]
