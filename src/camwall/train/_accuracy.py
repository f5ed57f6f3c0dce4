"""Accuracy of a model on a dataset: top-1, top-5 and mean cross-entropy, one or many cells.

:func:`evaluate_model` is what :func:`camwall.train.fit` validates with after every epoch and
what :func:`camwall.train.evaluate` runs on a saved model. Under ``torch.distributed`` each rank
reads every ``world``-th example and the sums are all-reduced.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from camwall.runtime import DistInfo, all_reduce_sum, dist_info

__all__ = ["EvalResult", "evaluate_model", "per_cell"]


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on a dataset: fractions in [0, 1] and the mean cross-entropy."""

    top1: float
    top5: float
    loss: float
    n: int


class _RankSlice(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: an unpadded evaluation split."""

    def __init__(self, n: int, info: DistInfo) -> None:
        self.indices = list(range(info.rank, n, info.world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def per_cell(logits: Tensor, labels: Tensor) -> Tensor:
    """Logits in the layout of ``labels``: ``B x K`` unchanged for ``B`` labels; for a grid
    task (``B x cells`` labels, logits ``[k K/cells, (k+1) K/cells)`` are cell ``k``'s), the
    ``B x K/cells x cells`` view that ``F.cross_entropy`` and ``argmax(1)`` read per cell."""
    if labels.dim() != 2:
        return logits
    return logits.reshape(labels.shape[0], labels.shape[1], -1).transpose(1, 2)


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Labels among the top ``k`` logits (``logits``: ``B x K`` or ``B x K x cells``)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels.unsqueeze(1)).any(dim=1).sum()


@dataclass
class _EvalTotals:
    """Running sums of :func:`evaluate_model` (float64 tensors on the device)."""

    loss: Tensor
    top1: Tensor
    top5: Tensor
    seen: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> _EvalTotals:
        z = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(4)]
        return cls(*z)

    def add(self, logits: Tensor, labels: Tensor) -> None:
        logits = per_cell(logits, labels)
        self.loss += F.cross_entropy(logits, labels, reduction="sum").double()
        self.top1 += _topk_correct(logits, labels, 1)
        self.top5 += _topk_correct(logits, labels, 5)
        self.seen += labels.numel()

    def result(self) -> EvalResult:
        """All-reduce over ranks and divide: the full-dataset :class:`EvalResult`."""
        loss, top1, top5, seen = all_reduce_sum(
            torch.stack([self.loss, self.top1, self.top5, self.seen])
        ).tolist()
        total = max(seen, 1.0)
        return EvalResult(top1=top1 / total, top5=top5 / total, loss=loss / total, n=int(seen))


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp: bool = False,
    num_workers: int = 0,
) -> EvalResult:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` on ``dataset`` (eval mode).

    Under ``torch.distributed`` each rank evaluates every ``world``-th example and the sums are
    all-reduced, so every rank returns the full-dataset result. The model's train/eval mode is
    restored afterwards.

    Args:
        model: maps ``B x C x H x W`` to logits ``B x K``.
        dataset: ``(image, label)`` pairs.
        batch_size: evaluation batch size.
        device: where to run; default: the model's device.
        amp: float16 autocast (CUDA only).
        num_workers: DataLoader workers.
    """
    device = torch.device(device if device is not None else next(model.parameters()).device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_RankSlice(len(dataset), dist_info()),  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    totals = _EvalTotals.zeros(device)
    use_amp = amp and device.type == "cuda"
    try:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            totals.add(logits.float(), y)
    finally:
        model.train(was_training)
    return totals.result()
