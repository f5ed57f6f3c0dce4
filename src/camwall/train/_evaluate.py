"""Evaluating a saved model: top-1 / top-5 on a named dataset or a folder."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

from camwall.errors import CamwallError
from camwall.runtime import resolve_device
from camwall.train._accuracy import EvalResult, evaluate_model
from camwall.train._data import DEFAULT_COMPOSITES, EVAL_DATASETS, eval_dataset

__all__ = ["evaluate", "grid_accuracy"]


def evaluate(
    checkpoint: str | Path,
    dataset: str,
    *,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    data_root: str | None = None,
) -> EvalResult:
    """Top-1 / top-5 accuracy of the model in ``checkpoint`` (``camwall.walls.load_model``).

    Args:
        checkpoint: ``NAME.safetensors`` (with ``NAME.json`` beside it).
        dataset: a name in :data:`EVAL_DATASETS` (``fashion-grid`` for a grid model, the others
            for a single-output one) or a folder (a model trained on an ImageFolder tree reads it
            with the val pipeline; others with :func:`camwall.data.read_image_dataset`).
        n: number of composites (default :data:`DEFAULT_COMPOSITES`, said on stderr) or a cap on
            the test canvases; must be >= 1.
        seed: seed of the composites.
        batch_size: evaluation batch size.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        data_root: Fashion-MNIST folder.

    Returns:
        :class:`EvalResult` (fractions in [0, 1]).

    Raises:
        CamwallError: ``n`` < 1; labels per cell for a single-output model or one label per
            image for a grid model; a label outside ``0 .. K-1`` for a ``K``-class model; a
            non-finite loss (NaN/inf weights or outputs).
    """
    from camwall.walls import describe, load_model

    n = _image_count(n, dataset, seed)
    model, meta = load_model(checkpoint)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    recorded = meta.get("input_shape") or describe(model).input_shape
    shape = tuple(int(v) for v in (recorded or (3, 224, 224)))
    training = meta.get("training") or {}
    folder_pipeline = (training.get("config") or {}).get("dataset") == "imagefolder"
    ds = eval_dataset(
        dataset, shape, n=n, seed=seed, folder_pipeline=folder_pipeline, data_root=data_root
    )
    _check_task(model, meta, ds, dataset, checkpoint)
    _check_labels(model, ds, dataset, dev)
    result = evaluate_model(model, ds, batch_size=batch_size, device=dev)
    if not math.isfinite(result.loss):
        raise CamwallError(
            f"{checkpoint}: the loss on {dataset} is {result.loss} (the model's weights or "
            "outputs are NaN/inf); retrain the model or load an earlier checkpoint."
        )
    return result


def _image_count(n: int | None, dataset: str, seed: int) -> int | None:
    """``n`` checked (>= 1); for a composite dataset without ``n``, the default, said on stderr."""
    from camwall.data import DATASETS

    if n is not None and n < 1:
        raise CamwallError(f"--n must be at least 1 (number of images to evaluate), got {n}.")
    if n is None and dataset in DATASETS:
        n = DEFAULT_COMPOSITES
        print(
            f"camwall evaluate: building {n} {dataset} composites (seed {seed}); "
            "set --n to change.",
            file=sys.stderr,
        )
    return n


def _labels(ds: Dataset[Any]) -> Tensor | None:
    """The labels of the common dataset kinds without reading images (``None``: unknown)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[1]
    if isinstance(ds, Subset):
        inner = _labels(ds.dataset)
        return None if inner is None else inner[torch.as_tensor(list(ds.indices))]
    for name in ("targets", "labels"):
        values = getattr(ds, name, None)
        if values is not None:
            return torch.as_tensor(values)
    return None


def _check_task(
    model: nn.Module, meta: dict[str, Any], ds: Dataset[Any], name: str, checkpoint: str | Path
) -> None:
    """One label per image (``N`` labels) needs a single-output model; one label per cell
    (``N x cells`` labels, as ``fashion-grid``'s) needs a grid model (:func:`model_task`)."""
    from camwall.walls import model_task

    labels = _labels(ds)
    if labels is None:
        return
    grid_model = model_task(model, meta)["name"] == "grid"
    if labels.dim() == 2 and not grid_model:
        raise CamwallError(
            f"--dataset {name} has {labels.shape[1]} labels per image (one per grid cell), but "
            f"--model {checkpoint} is a single-output model (one label per image); evaluate a "
            "grid model on it (one trained with `camwall train --preset fashion-grid-vgg`), or "
            f"this model on {', '.join(d for d in EVAL_DATASETS if d != name)}."
        )
    if labels.dim() == 1 and grid_model:
        raise CamwallError(
            f"--dataset {name} has one label per image, but --model {checkpoint} is a grid model "
            "(one label per cell); evaluate it on --dataset fashion-grid."
        )


def _check_labels(model: nn.Module, ds: Dataset[Any], name: str, dev: torch.device) -> None:
    """Every label must index one of the model's ``K`` outputs (``K`` from one forward pass)."""
    labels = _labels(ds)
    if labels is None or labels.numel() == 0:
        return
    with torch.no_grad():
        classes = int(model(ds[0][0].unsqueeze(0).to(dev)).shape[1])
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.numel():
        raise CamwallError(
            f"--dataset {name}: label {int(bad[0])} is outside 0..{classes - 1}, the classes of "
            f"this {classes}-class model ({bad.numel()} such labels); fix the dataset's labels "
            "or evaluate a model trained on these classes."
        )


@torch.no_grad()
def grid_accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256
) -> dict[str, Any]:
    """Top-1 accuracy of a grid model per cell: ``labels`` ``N x cells``, logits ``N x
    cells*K`` (cell ``k`` = logits ``[kK, (k+1)K)``); eval mode, restored afterwards.

    Returns:
        ``{"top1": mean over all cells, "per_cell": [top-1 of cell k, ...], "n": N}``.
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros(labels.shape[1], dtype=torch.int64)
    try:
        for s in range(0, len(labels), batch_size):
            logits = model(images[s : s + batch_size])
            pred = logits.reshape(logits.shape[0], labels.shape[1], -1).argmax(-1)
            correct += (pred.cpu() == labels[s : s + batch_size]).sum(0)
    finally:
        model.train(was_training)
    per_cell = (correct.double() / len(labels)).tolist()
    return {"top1": float(correct.sum()) / labels.numel(), "per_cell": per_cell, "n": len(labels)}
