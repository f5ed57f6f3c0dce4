"""Trained weights shipped inside the package: the default ``fashion-vgg`` walled + baseline pair,
and the walled ``fashion-grid-vgg`` grid model (0.6 MB; its baseline is not shipped, to keep
the package small: ``camwall train --preset fashion-grid-vgg`` trains both).

Each model is a camwall checkpoint (``NAME.safetensors`` + ``NAME.json``, read with
:func:`camwall.walls.load_model`), about 0.5 MB each. The JSON's ``training`` entry is the
training manifest: preset, config (seed included), steps, final epoch metrics, library versions,
and ``test_accuracy``: top-1 on the 10,000 Fashion-MNIST test canvases measured with
:func:`camwall.train.evaluate` (``"fashion-canvases"``), which the tests check exactly.

``camwall bench`` uses this pair unless told otherwise (``--model``/``--baseline``);
``camwall bench --retrain`` trains the pair from scratch (:func:`camwall.train.cached_pair`).

The grid model's ``test_accuracy`` is :func:`camwall.train.grid_accuracy` on the 2,500 fixed test
mosaics (``fashion_grids("test", seed=0, augment=False)``): overall and per cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camwall.errors import CamwallError

__all__ = ["SHIPPED", "SHIPPED_MODELS", "shipped_manifest", "shipped_model", "shipped_pair"]

SHIPPED = ("fashion-vgg",)
"""Presets whose trained pair ships with camwall."""
SHIPPED_MODELS = ("fashion-vgg", "fashion-grid-vgg")
"""Presets whose trained walled model ships with camwall."""

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


def shipped_model(preset: str = "fashion-grid-vgg") -> Path:
    """The walled checkpoint (``.safetensors``) shipped for ``preset``.

    Raises:
        CamwallError: no model ships for ``preset``, or its files are missing.
    """
    if preset not in SHIPPED_MODELS:
        raise CamwallError(
            f"no trained model ships for preset {preset!r} (shipped: "
            f"{', '.join(SHIPPED_MODELS)}); train one with `camwall train --preset NAME`."
        )
    path = _ROOT / preset / "walled.safetensors"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise CamwallError(
            f"the shipped {preset} weights are missing ({path.with_suffix('')}.safetensors / "
            ".json); reinstall camwall, or train them with `camwall train --preset "
            f"{preset}`."
        )
    return path


def shipped_manifest(preset: str = "fashion-vgg", variant: str = "walled") -> dict[str, Any]:
    """The training manifest (the JSON's ``training`` entry) of a shipped model."""
    if variant == "walled" and preset in SHIPPED_MODELS:
        path = shipped_model(preset).with_suffix(".json")
    else:
        walled, baseline = shipped_pair(preset)
        path = {"walled": walled, "baseline": baseline}[variant].with_suffix(".json")
    return dict(json.loads(path.read_text())["training"])
