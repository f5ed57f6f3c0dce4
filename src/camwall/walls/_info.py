"""What a model says about itself: one frozen :class:`ModelInfo` per model.

Every builder (:func:`~camwall.walls.create_model`, :func:`~camwall.walls.walled_torchvision`,
:func:`~camwall.walls.load_model`) attaches one :class:`ModelInfo` to the model it returns;
:func:`describe` reads it (an empty description for any other model) and :func:`declare`
replaces some of its fields (e.g. a reshape transform for your own ViT). Readers never look
for loose attributes: the CAM engine takes ``describe(model).reshape``, the bench and the
trainer ``describe(model).input_shape``, the checkpoint writer the whole record.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from camwall.errors import CamwallError

__all__ = ["ModelInfo", "declare", "describe"]

_ATTR = "camwall_info"
"""The one attribute a described model carries (a :class:`ModelInfo`)."""


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if value is None else MappingProxyType(copy.deepcopy(dict(value)))


@dataclass(frozen=True)
class ModelInfo:
    """A frozen description of a model: how to rebuild it, what it reads and how it is walled.

    Attributes:
        arch: registry name (``"fashion-vgg"``, ...), ``"torchvision"`` for
            :func:`~camwall.walls.walled_torchvision`, or None (not rebuildable).
        kwargs: the builder's keyword arguments (JSON-ready; read-only).
        input_shape: ``(C, H, W)`` the dead zone and the bench use, or None.
        target_layer: dotted name of the default CAM target layer, or None.
        walls: the recorded walls, JSON-ready entries ``{"kind", "layer", "region", ...}``.
        reshape: ``reshape(raw_output) -> B x K x h x w`` for token layers (a
            :class:`camwall.tokens.TokenGrid` for the walled ViTs), or None.
        task: ``{"name": "grid", "cells": [2, 2], "classes": K}`` for a grid model, else None
            (one label per image).
        kind: the kind of wall for grouping results (``"grid"``), or None (inferred).
        class_names: one name per output class, when known (from a checkpoint).
    """

    arch: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, int, int] | None = None
    target_layer: str | None = None
    walls: tuple[Mapping[str, Any], ...] = ()
    reshape: Callable[[Any], Tensor] | None = None
    task: Mapping[str, Any] | None = None
    kind: str | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:  # deep, read-only copies: no caller can edit a record
        set_ = object.__setattr__
        set_(self, "kwargs", _frozen(self.kwargs))
        set_(self, "walls", tuple(_frozen(e) for e in self.walls))
        set_(self, "task", _frozen(self.task))
        if self.input_shape is not None:
            set_(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if self.class_names is not None:
            set_(self, "class_names", tuple(self.class_names))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Rebuilt from plain copies, so that ``copy.deepcopy(model)`` and pickling work
        (a read-only mapping view cannot be pickled)."""
        task = copy.deepcopy(dict(self.task)) if self.task is not None else None
        fields = (self.arch, self.kwargs_dict(), self.input_shape, self.target_layer)
        rest = (self.wall_list(), self.reshape, task, self.kind, self.class_names)
        return (ModelInfo, (*fields, *rest))

    @property
    def output_groups(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]``: the outputs of each cell of a grid task (row-major), or
        ``[]`` for a single-output model (output ``K k + c`` is class ``c`` of cell ``k``)."""
        task = self.task
        if task is None or task.get("name") != "grid":
            return []
        cells, k = int(task["cells"][0]) * int(task["cells"][1]), int(task["classes"])
        return [(c * k, (c + 1) * k) for c in range(cells)]

    def wall_list(self) -> list[dict[str, Any]]:
        """The walls as plain (mutable, deep-copied) dicts."""
        return [copy.deepcopy(dict(e)) for e in self.walls]

    def kwargs_dict(self) -> dict[str, Any]:
        """The builder's keyword arguments as a plain (deep-copied) dict."""
        return copy.deepcopy(dict(self.kwargs))


def describe(model: nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` attached to ``model`` (not looked up through a DDP ``.module``
    wrapper), or an empty one (every field None / empty) for a model no builder described."""
    info = getattr(model, _ATTR, None)
    return info if isinstance(info, ModelInfo) else ModelInfo()


def declare(model: nn.Module, **changes: Any) -> ModelInfo:
    """Replace fields of ``model``'s description (see :class:`ModelInfo`) and attach it.

    E.g. ``declare(my_vit, reshape=camwall.cams.token_grid(), target_layer="blocks.3.ln_1")``.
    Returns the new description.

    Raises:
        CamwallError: for a name that is not a field of :class:`ModelInfo`.
    """
    names = [f.name for f in dataclasses.fields(ModelInfo)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise CamwallError(
            f"declare: {', '.join(unknown)} is not a model description field; fields: "
            f"{', '.join(names)}."
        )
    info = dataclasses.replace(describe(model), **changes)
    setattr(model, _ATTR, info)
    return info
