"""``fashion-grid-vgg``: a 2 x 2 grid classifier whose cell-``k`` logits provably see only cell
``k`` (per-output walls; the DiFull construction of Rao, Böhle and Schiele, CVPR 2022).

The model declares its task in its description (``describe(model).task``, saved in checkpoints
as ``"task"``): ``{"name": "grid", "cells": [2, 2], "classes": 10}``; output ``10 k + c`` is the
logit of class ``c`` in cell ``k`` (row-major). Single-output models have no task (task
``"single"``); :func:`model_task` reads either.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from camwall.walls._info import describe
from camwall.walls._models import (
    MODELS,
    _check_args,
    _init_kaiming,
    _linear_wall_entry,
    _tag,
    fashion_trunk,
)
from camwall.walls._modules import WalledLinear, set_walls
from camwall.walls._spec import WallSpec

__all__ = ["cell_walls", "fashion_grid_vgg", "model_kind", "model_task", "output_groups"]

HIDDEN = 64
"""Hidden units per cell in the head."""


def cell_walls(size: int) -> tuple[WallSpec, ...]:
    """The four per-output walls of a ``size x size`` map cut into 2 x 2 cells (row-major):
    wall ``k`` blocks everything outside cell ``k``."""
    half = size // 2
    return tuple(
        WallSpec(rows=(r * half, (r + 1) * half), cols=(c * half, (c + 1) * half), outside=True)
        for r in range(2)
        for c in range(2)
    )


def _group_walls(groups: int) -> tuple[WallSpec, ...]:
    """Walls of a ``1 x groups x HIDDEN`` map (row ``g`` = the hidden units of cell ``g``):
    wall ``g`` blocks every row but ``g``, so the head stays block-diagonal."""
    return tuple(WallSpec(rows=(g, g + 1), outside=True) for g in range(groups))


@MODELS.add
def fashion_grid_vgg(num_classes: int = 10, walled: bool = True, width: int = 8) -> nn.Sequential:
    """A VGG-style 2 x 2 grid classifier for 1 x 64 x 64 mosaics: ``4 x num_classes`` logits.

    Flat ``nn.Sequential`` (``w = width``): ``0`` conv(1 -> w) ``1`` ReLU ``2`` pool (32 x 32)
    ``3`` conv(w -> 2w) ``4`` ReLU ``5`` pool (16 x 16) ``6`` conv(2w -> 4w) ``7`` ReLU
    ``8`` conv(4w -> w) ``9`` ReLU (CAM target, ``w x 16 x 16``; cell ``k`` is its 8 x 8 block
    ``k``) ``10`` max-pool (``w x 8 x 8``: 2 x 2 windows never straddle a cell border)
    ``11`` Flatten ``12`` :class:`WalledLinear` (``w*8*8 -> 4*64``) whose hidden group ``k``
    reads only the 4 x 4 block ``k`` ``13`` ReLU ``14`` Dropout(0.25) ``15``
    :class:`WalledLinear` (``4*64 -> 4*num_classes``) whose logit group ``k`` reads only
    hidden group ``k``. So logits ``[10k, 10k + 10)`` see only block ``k`` of the last map.
    The baseline (``walled=False``) has plain ``nn.Linear`` layers (every logit sees all).

    Receptive field: feature row ``r`` of layer ``9`` reads input rows ``4r - 11 .. 4r + 14``
    (likewise columns), so block ``k`` (32 x 32 input pixels) reads its cell plus an
    **11-pixel margin** into each neighbouring cell. The input dead zone of cell ``k``'s logits
    is the other three cells minus that margin: 4096 - 43 * 43 = 2247 pixels (54.9%); the union
    over all outputs is empty. He initialisation, no BatchNorm (the wall holds in train mode).
    About 0.15 M parameters at ``width=8`` (3/4 of the first head's weights are walled zeros).
    """
    _check_args(walled, num_classes=num_classes, width=width)
    w, cells = width, 4
    head: list[nn.Module]
    if walled:
        first = WalledLinear(w * 64, cells * HIDDEN, feature_shape=(w, 8, 8), wall=cell_walls(8))
        last = WalledLinear(
            cells * HIDDEN,
            cells * num_classes,
            feature_shape=(1, cells, HIDDEN),
            wall=_group_walls(cells),
        )
        head = [first, nn.ReLU(inplace=True), nn.Dropout(p=0.25), last]
    else:
        head = [
            nn.Linear(w * 64, cells * HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.25),
            nn.Linear(cells * HIDDEN, cells * num_classes),
        ]
    model = nn.Sequential(
        *fashion_trunk(w),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *head,
    )
    _init_kaiming(model)
    kwargs = {"num_classes": num_classes, "walled": walled, "width": width}
    task = {"name": "grid", "cells": [2, 2], "classes": num_classes}
    _tag(model, "fashion-grid-vgg", kwargs, (1, 64, 64), "9", task=task, kind="grid")
    if walled:
        set_walls(model, [_linear_wall_entry("12", first), _linear_wall_entry("15", last)])
    return model


def model_task(
    model: nn.Module | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The task a model solves: ``{"name": "grid", "cells": [2, 2], "classes": K}`` for a grid
    model, else ``{"name": "single"}`` (one label per image). Read from the model's
    description (``describe(model).task``), else from a checkpoint's ``"task"`` key."""
    task = describe(model).task if model is not None else None
    if task is None and meta is not None:
        task = meta.get("task")
    return copy.deepcopy(dict(task)) if isinstance(task, Mapping) else {"name": "single"}


def model_kind(model: nn.Module | None = None, meta: dict[str, Any] | None = None) -> str:
    """The kind of wall a model has, for grouping results: its declared ``kind`` (or the
    checkpoint's ``"kind"``) when declared; else ``"grid"`` for a grid task, ``"ViT"`` for a
    model with attention layers or a vision-transformer class, else ``"CNN"``."""
    kind = describe(model).kind if model is not None else None
    if kind is None and meta is not None:
        kind = meta.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    if model_task(model, meta)["name"] == "grid":
        return "grid"
    if model is not None and any(
        isinstance(m, nn.MultiheadAttention)
        or "VisionTransformer" in type(m).__name__
        or type(m).__name__.lower().startswith("vit")
        for m in model.modules()
    ):
        return "ViT"
    arch = str((meta or {}).get("arch") or (describe(model).arch if model is not None else ""))
    return "ViT" if "vit" in arch.lower() else "CNN"


def output_groups(model: nn.Module) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: the outputs of each cell of a grid model (row-major), or
    ``[]`` for a single-output model."""
    return describe(model).output_groups
