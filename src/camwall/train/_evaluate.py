"""Evaluating a saved model: top-1 / top-5 on a named dataset or a folder."""

from __future__ import annotations

from pathlib import Path

import torch

from camwall.runtime import resolve_device
from camwall.train._data import eval_dataset
from camwall.train._loop import EvalResult, evaluate_model

__all__ = ["evaluate"]


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
        dataset: ``fashion-canvases``, ``fashion-stackmix``, ``fashion-stackpair`` or a folder
            (a model trained on an ImageFolder tree reads it with the val pipeline; others with
            :func:`camwall.data.read_image_dataset`).
        n: number of composites (default 1000) or a cap on the test canvases.
        seed: seed of the composites.
        batch_size: evaluation batch size.
        device: ``auto``, ``cpu``, ``cuda``.
        data_root: Fashion-MNIST folder.

    Returns:
        :class:`EvalResult` (fractions in [0, 1]).
    """
    from camwall.walls import load_model

    model, meta = load_model(checkpoint)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    recorded = meta.get("input_shape") or getattr(model, "camwall_input_shape", None)
    shape = tuple(int(v) for v in (recorded or (3, 224, 224)))
    training = meta.get("training") or {}
    folder_pipeline = (training.get("config") or {}).get("dataset") == "imagefolder"
    ds = eval_dataset(
        dataset, shape, n=n, seed=seed, folder_pipeline=folder_pipeline, data_root=data_root
    )
    return evaluate_model(model, ds, batch_size=batch_size, device=dev)
