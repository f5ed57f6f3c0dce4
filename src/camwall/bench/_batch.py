"""One batch of a bench run: its images, predictions, explained targets and dead zones, each
computed once; and the predictions of a model on a dataset.

What a map explains depends on the model, and is decided once per model by :func:`aim`:

- a single-output model explains its predicted class, and every image shares the model's one
  ``H x W`` dead zone;
- a grid model (``cell_zones``) explains, for image ``i``, the predicted class of cell
  ``k = explained_cell(i, seed)``: output ``k K + predicted`` of its ``cells x K`` logits, with
  cell ``k``'s own dead zone and the cell itself as the target region.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from camwall._outputs import logits_of
from camwall.bench._plan import BenchDataset, BenchModel, BenchPlan, check_labels, explained_cell
from camwall.bench._store import Store
from camwall.errors import CamwallError

__all__ = ["Aim", "Batch", "Prediction", "aim", "batches", "predict"]


class Prediction(NamedTuple):
    """A model's answer on one image (of its explained cell, for a grid model)."""

    label: int
    predicted: int
    confidence: float


@dataclass(frozen=True)
class Aim:
    """What a model's maps explain (see the module docstring). ``cells`` and ``classes`` are 0
    for a single-output model; ``zones`` is its one ``1 x H x W`` dead zone, else the
    ``cells x H x W`` dead zones of the cells."""

    zones: Tensor
    seed: int
    cells: int = 0
    classes: int = 0

    def cell_of(self, ids: Sequence[int]) -> Tensor:
        """int64 ``B``: the cell each image explains (:func:`explained_cell`)."""
        return torch.tensor([explained_cell(i, self.seed, self.cells) for i in ids])

    def select(self, logits: Tensor, labels: Tensor, ids: Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(B x K logits, B labels)`` of what each image explains."""
        if not self.cells:
            return logits, labels
        cells, rows = self.cell_of(ids), torch.arange(len(ids))
        per_cell = logits.reshape(len(ids), self.cells, -1)
        return per_cell[rows, cells.to(logits.device)], labels[rows, cells]

    def targets(self, ids: Sequence[int], predicted: Sequence[int]) -> list[int]:
        """The output index each map explains: the predicted class, offset by ``cell * classes``
        for a grid model (logits ``[k K, (k+1) K)`` are cell ``k``'s)."""
        if not self.cells:
            return list(predicted)
        cells = self.cell_of(ids).tolist()
        return [c * self.classes + p for c, p in zip(cells, predicted, strict=True)]

    def dead_zones(self, ids: Sequence[int]) -> tuple[Tensor, Tensor | None]:
        """``(dead zones, target regions)``: bool ``B x H x W`` per image for a grid model (the
        explained cell's dead zone, and the cell itself), else the one ``H x W`` zone and None."""
        if not self.cells:
            return self.zones[0], None
        from camwall.data import cell_masks

        cells = self.cell_of(ids)
        return self.zones[cells], cell_masks(int(self.zones.shape[-1]))[cells]


def aim(bm: BenchModel, seed: int) -> Aim:
    """The :class:`Aim` of model ``bm`` (decided once: grid or single output)."""
    if bm.cell_zones is None:
        return Aim(bm.dead_zone.unsqueeze(0), seed)
    from camwall.bench._inputs import model_facts

    classes = int(model_facts(bm.model).get("classes") or len(bm.class_names))
    return Aim(bm.cell_zones, seed, len(bm.cell_zones), classes)


@dataclass(frozen=True)
class Batch:
    """One batch, everything computed once.

    Attributes:
        model, dataset: the bench model and dataset; ``net`` the network on the device.
        ids: the image indices; ``x`` their images on the device (``B x C x H x W``).
        methods: the methods that still need these images (the others are stored).
        preds: one :class:`Prediction` per image.
        targets: the output index each map explains (:meth:`Aim.targets`).
        dead: bool dead zone, ``H x W`` or ``B x H x W``, on the device.
        region: bool ``B x H x W`` target regions (grid model) on the device, else None.
    """

    model: BenchModel
    net: nn.Module
    dataset: BenchDataset
    ids: tuple[int, ...]
    x: Tensor
    methods: tuple[str, ...]
    preds: tuple[Prediction, ...]
    targets: tuple[int, ...]
    dead: Tensor
    region: Tensor | None

    @property
    def where(self) -> str:
        """Which images these are, for error messages."""
        return f"images {self.ids[0]}..{self.ids[-1]} of {self.dataset.name!r}"


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    """``ids`` cut into runs of at most ``size``."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def batches(
    bm: BenchModel,
    net: nn.Module,
    ds: BenchDataset,
    todo: dict[str, set[int]],
    preds: dict[int, Prediction],
    plan: BenchPlan,
) -> Iterator[Batch]:
    """The batches of the images some method still needs (``todo``: method -> images)."""
    target = aim(bm, plan.seed)
    ids_left = sorted(set().union(*todo.values()))
    assert plan.batch_size is not None
    for ids in chunks(ids_left, plan.batch_size):
        mine = [preds[i] for i in ids]
        dead, region = target.dead_zones(ids)
        yield Batch(
            model=bm,
            net=net,
            dataset=ds,
            ids=tuple(ids),
            x=bm.inputs(ds.images[ids].to(plan.device)),
            methods=tuple(m for m in plan.methods if any(i in todo[m] for i in ids)),
            preds=tuple(mine),
            targets=tuple(target.targets(ids, [p.predicted for p in mine])),
            dead=dead.to(plan.device),
            region=None if region is None else region.to(plan.device),
        )


def predict(
    store: Store,
    bm: BenchModel,
    net: nn.Module,
    ds: BenchDataset,
    mine: Sequence[int],
    plan: BenchPlan,
) -> dict[int, Prediction]:
    """``image -> Prediction`` for ``mine`` (stored ones are read back, the others computed in
    batches of ``max(batch_size, 64)`` and stored); for a grid model, of the explained cell
    (:func:`explained_cell`): its label and the argmax of its logits."""
    have = {i: Prediction(*p) for i, p in store.predicted(bm.name, ds.name).items()}
    target = aim(bm, plan.seed)
    assert plan.batch_size is not None
    for ids in chunks([i for i in mine if i not in have], max(plan.batch_size, 64)):
        with torch.no_grad():
            logits = logits_of(net(bm.inputs(ds.images[ids].to(plan.device))))
        _check_logits(bm, ds, logits, len(ids))
        logits, labels = target.select(logits, ds.labels[ids], ids)
        conf, pred = logits.float().softmax(dim=1).max(dim=1)
        rows = [
            (i, int(label), int(p), float(c))
            for i, label, p, c in zip(
                ids, labels.tolist(), pred.cpu().tolist(), conf.cpu().tolist()
            )
        ]
        store.add_predictions(bm.name, ds.name, rows)
        have.update({r[0]: Prediction(r[1], r[2], r[3]) for r in rows})
    return have


def _check_logits(bm: BenchModel, ds: BenchDataset, logits: Any, n: int) -> None:
    """``B x classes`` logits, and every label of ``ds`` a class of the model."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        raise CamwallError(
            f"model {bm.name!r} must return B x classes logits; got "
            f"{getattr(logits, 'shape', type(logits).__name__)}."
        )
    check_labels(ds, bm.name, int(logits.shape[1]))
