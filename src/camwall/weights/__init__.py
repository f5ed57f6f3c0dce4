"""Trained weights shipped inside the package: the default ``fashion-vgg`` walled + baseline pair,
and the ``fashion-vit`` pair (a walled Vision Transformer and its unwalled twin).

Each model is a camwall checkpoint (``NAME.safetensors`` + ``NAME.json``, read with
:func:`camwall.walls.load_model`), about 0.5 MB each (``fashion-vit``: 0.6 MB). The JSON's
``training`` entry is the training manifest: preset, config (seed included), steps, final epoch
metrics, library versions, and ``test_accuracy``: top-1 on the 10,000 Fashion-MNIST test
canvases measured with :func:`camwall.train.evaluate` (``"fashion-canvases"``), which the tests
check exactly.

``camwall bench`` uses this pair unless told otherwise (``--model``/``--baseline``);
``camwall bench --retrain`` trains the pair from scratch (:func:`camwall.train.cached_pair`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camwall.errors import CamwallError

__all__ = ["SHIPPED", "shipped_manifest", "shipped_pair"]

SHIPPED = ("fashion-vgg", "fashion-vit")
"""Presets whose trained pair ships with camwall."""

_ROOT = Path(__file__).resolve().parent


def shipped_pair(preset: str = "fashion-vgg") -> tuple[Path, Path]:
    """``(walled, baseline)`` checkpoint paths (``.safetensors``) of the shipped pair.

    Raises:
        CamwallError: no pair ships for ``preset``, or its files are missing from the install.
    """
    if preset not in SHIPPED:
        raise CamwallError(
            f"no trained pair ships for preset {preset!r} (shipped: {', '.join(SHIPPED)}); "
            "train one with `camwall train --preset NAME` or `camwall bench --retrain`."
        )
    paths = (_ROOT / preset / "walled.safetensors", _ROOT / preset / "baseline.safetensors")
    for p in paths:
        if not p.is_file() or not p.with_suffix(".json").is_file():
            raise CamwallError(
                f"the shipped {preset} weights are missing ({p.with_suffix('')}.safetensors / "
                ".json); "
                "reinstall camwall, or use `camwall bench --retrain` to train the pair."
            )
    return paths


def shipped_manifest(preset: str = "fashion-vgg", variant: str = "walled") -> dict[str, Any]:
    """The training manifest (the JSON's ``training`` entry) of a shipped model."""
    walled, baseline = shipped_pair(preset)
    path = {"walled": walled, "baseline": baseline}[variant].with_suffix(".json")
    return dict(json.loads(path.read_text())["training"])
