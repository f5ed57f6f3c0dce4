"""Walled timm Vision Transformers that can be saved, rebuilt and given external weights.

:func:`walled_timm` builds ``timm.create_model(name, pretrained=False, ...)`` (never a
download) and walls it with :func:`~camwall.walls.wall_vit`. The model records
``arch="timm"`` and ``kwargs={"name", "walls", "num_classes", "input_shape", ...}``, so
:func:`~camwall.walls.save_model` / :func:`~camwall.walls.load_model` round-trip it, and
:func:`~camwall.walls.load_weights` loads a plain timm state dict (the walled model keeps
every key). timm is optional: ``pip install 'camwall[timm]'``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from camwall.errors import CamwallError, did_you_mean
from camwall.walls._checks import positive_int
from camwall.walls._models import _tag
from camwall.walls._swin import is_swin, wall_named_swin
from camwall.walls._torchvision import WallsArg, _walls
from camwall.walls._vit_any import (
    is_vision_transformer,
    refuse_windowed,
    vit_input_shape,
    wall_named_vit,
)

__all__ = ["TIMM_ARCH", "rebuild_timm", "timm_module", "walled_timm"]

#: The ``arch`` recorded by :func:`walled_timm` (and read by ``load_model``).
TIMM_ARCH = "timm"

_NO_DOWNLOAD = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def timm_module() -> ModuleType:
    """``import timm``, or a one-line :class:`CamwallError` with the install command."""
    try:
        import timm
    except ImportError:
        raise CamwallError(
            "timm is not installed; walled timm models need it: pip install 'camwall[timm]'"
        ) from None
    return timm


def walled_timm(
    name: str,
    walls: WallsArg = None,
    num_classes: int = 1000,
    *,
    input_shape: Sequence[int] | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm Vision Transformer or Swin with a wall on its patch grid (or without, ``walls=None``).

    ``timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)``
    (randomly initialised: load weights with :func:`~camwall.walls.load_weights`), then
    :func:`~camwall.walls.wall_vit` with the one wall, named by the encoder layer
    ``"blocks"``: e.g. ``walls="blocks:rows=10:"`` (the bottom 4 patch rows of a 14 x 14
    grid) or ``walls={"blocks": WallSpec.right(7)}``. A Swin (``swin_*``, V1) is walled by
    :func:`~camwall.walls.wall_swin`, its wall named ``"layers"`` and aligned to its coarsest
    grid: e.g. ``walls="layers:rows=48:"`` for ``swin_tiny_patch4_window7_224``.

    Args:
        name: a timm model name (``deit_tiny_patch16_224``, ``vit_small_patch16_224``,
            ``vit_base_patch16_reg4_gap_256``, ...) of a timm ``VisionTransformer``.
        walls: as for :func:`~camwall.walls.walled_torchvision`, one wall for ``"blocks"``
            (a Swin: ``"layers"``).
        num_classes: classifier outputs.
        input_shape: the model's ``(C, H, W)`` (default; any other is refused).
        seed: seeds the initialisation without touching the global RNG; None: global RNG.
        **kwargs: other JSON-ready keyword arguments of ``timm.create_model`` (e.g.
            ``img_size=64``, ``depth=2``, ``global_pool="avg"``, ``class_token=False``,
            ``reg_tokens=4``).

    Returns:
        The walled model, recording ``arch="timm"`` and its keyword arguments.

    Raises:
        CamwallError: timm missing (with the pip command), an unknown name (with a
        suggestion), a weights argument, bad builder arguments, a model that is not a plain
        ViT or Swin (MaxViT and others, with the reason), or a bad wall.
    """
    timm = timm_module()
    where = f"walled_timm({name!r})"
    _check_args(timm, name, kwargs, where)
    positive_int(num_classes, f"{where}: num_classes")
    parsed = _walls(walls)
    model = _build(timm, name, num_classes, seed, kwargs, where)
    if is_swin(model):
        target, shape = wall_named_swin(model, parsed, input_shape, where)
    elif is_vision_transformer(model):
        target = wall_named_vit(model, parsed, where)
        shape = vit_input_shape(model, input_shape, where)
    else:
        refuse_windowed(model, where)
        raise CamwallError(
            f"{where}: {type(model).__name__} is not a timm VisionTransformer or "
            "SwinTransformer; walled_timm walls ViTs (vit_*, deit_*) and Swin V1 (swin_*)."
        )
    record = {
        "name": name,
        "walls": [{"layer": layer, "region": spec.to_dict()} for layer, spec in parsed],
        "num_classes": num_classes,
        "input_shape": list(shape),
        **kwargs,
    }
    _tag(model, TIMM_ARCH, record, (shape[0], shape[1], shape[2]), target)
    return model


def _check_args(timm: ModuleType, name: str, kwargs: Mapping[str, Any], where: str) -> None:
    """A known model name, no weight download, JSON-ready builder arguments."""
    if not isinstance(name, str) or not timm.is_model(name):
        names = timm.list_models("*vit*") + timm.list_models("deit*")
        raise CamwallError(
            f"unknown timm model {name!r}.{did_you_mean(str(name), names)} See "
            "timm.list_models('vit_*')."
        )
    for key in _NO_DOWNLOAD:
        if key in kwargs:
            raise CamwallError(
                f"{where}: {key}=... is not taken: weights are never downloaded; build the "
                "model, then camwall.walls.load_weights(model, FILE.safetensors)."
            )
    try:
        json.dumps(dict(kwargs), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CamwallError(
            f"{where}: builder arguments {sorted(kwargs)} must be JSON-ready (numbers, "
            f"strings, lists, dicts) to be saved and rebuilt ({err})."
        ) from None


def _build(
    timm: ModuleType,
    name: str,
    num_classes: int,
    seed: int | None,
    kwargs: Mapping[str, Any],
    where: str,
) -> nn.Module:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise CamwallError(f"{where}: seed must be an integer, got {seed!r}.")
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model: nn.Module = timm.create_model(
                name, pretrained=False, num_classes=num_classes, **kwargs
            )
            return model
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        raise CamwallError(f"{where}: cannot build it with {dict(kwargs)}: {err}") from None


def rebuild_timm(kwargs: Mapping[str, Any]) -> nn.Module:
    """:func:`walled_timm` from a recorded ``kwargs`` (``name`` is the model name)."""
    kw = dict(kwargs)
    name = kw.pop("name", None)
    if not isinstance(name, str):
        raise CamwallError(f"arch_kwargs of a timm model need a string 'name', got {name!r}.")
    return walled_timm(name, **kw)
