"""Trained weights shipped inside the package: the default ``fashion-vgg`` walled + baseline pair,
the walled ``fashion-grid-vgg`` grid model (its baseline is not shipped, to keep the package
small: ``camwall train --preset fashion-grid-vgg`` trains both) and the walled ``fashion-vit`` (a
Vision Transformer walled by its attention mask).

Each model is a camwall checkpoint (``NAME.safetensors`` + ``NAME.json``, read with
:func:`camwall.walls.load_model`), about 0.5 MB each (``fashion-vit``: 0.6 MB). The JSON's
``training`` entry is the training manifest: preset, config (seed included), steps, final epoch
metrics, library versions, and ``test_accuracy``: top-1 on the 10,000 Fashion-MNIST test
canvases measured with :func:`camwall.train.evaluate` (``"fashion-canvases"``), which the tests
check exactly. The grid model's ``test_accuracy`` is :func:`camwall.train.grid_accuracy` on the
2,500 fixed test mosaics (``fashion_grids("test", seed=0, augment=False)``): overall and per cell.

``camwall bench`` uses this pair unless told otherwise (``--model``/``--baseline``);
``camwall bench --retrain`` trains the pair from scratch (:func:`camwall.train.cached_pair`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camwall.errors import CamwallError

__all__ = ["SHIPPED", "SHIPPED_MODELS", "shipped_manifest", "shipped_model", "shipped_pair"]

SHIPPED = ("fashion-vgg",)
"""Presets whose trained walled + baseline pair ships with camwall."""

SHIPPED_MODELS: dict[str, tuple[str, ...]] = {
    "fashion-vgg": ("walled", "baseline"),
    "fashion-grid-vgg": ("walled",),
    "fashion-vit": ("walled",),
}
"""Every shipped checkpoint: preset -> its shipped variants."""

_ROOT = Path(__file__).resolve().parent


def shipped_model(preset: str = "fashion-vgg", variant: str = "walled") -> Path:
    """The ``.safetensors`` path of one shipped model (``variant``: walled or baseline).

    Raises:
        CamwallError: no such model ships, or its files are missing from the install.
    """
    variants = SHIPPED_MODELS.get(preset, ())
    if variant not in variants:
        shipped = ", ".join(f"{p} ({'/'.join(v)})" for p, v in SHIPPED_MODELS.items())
        raise CamwallError(
            f"no trained {variant} model ships for preset {preset!r} (shipped: {shipped}); "
            "train one with `camwall train --preset NAME` or `camwall bench --retrain`."
        )
    path = _ROOT / preset / f"{variant}.safetensors"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise CamwallError(
            f"the shipped {preset} weights are missing ({path.with_suffix('')}.safetensors / "
            ".json); reinstall camwall, or use `camwall bench --retrain` to train the pair."
        )
    return path


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
    return shipped_model(preset, "walled"), shipped_model(preset, "baseline")


def shipped_manifest(preset: str = "fashion-vgg", variant: str = "walled") -> dict[str, Any]:
    """The training manifest (the JSON's ``training`` entry) of a shipped model."""
    path = shipped_model(preset, variant).with_suffix(".json")
    return dict(json.loads(path.read_text())["training"])
