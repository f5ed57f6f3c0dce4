"""Several target layers: resolving them, checking which methods apply, aggregating maps.

As pytorch-grad-cam 1.5.7 (``BaseCAM.compute_cam_per_layer`` and ``aggregate_multi_layers``):
per layer ``l`` the map ``M_l = up(N(ReLU(raw_l)))`` at the input size; then
``final = N(mean_l max(M_l, 0))``, ``N`` the per-image min-max normalization. One layer gives
exactly :func:`camwall.cams.finalize_maps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._post import combine_layers
from camwall.cams._reshape import inverse_of
from camwall.cams._smooth import eigen_raw
from camwall.errors import CamwallError

if TYPE_CHECKING:
    from camwall.cams._engine import CamEngine

__all__ = ["LayerArg", "check_methods", "method_map", "resolve_layers", "whole_map"]

#: One target layer (a module or a dotted name) or a sequence of them.
LayerArg = nn.Module | str | Sequence[nn.Module | str]


def resolve_layers(model: nn.Module, target_layer: LayerArg) -> list[tuple[str, nn.Module]]:
    """``[(dotted_name, module), ...]`` for one layer or a list of layers (no repeats)."""
    from camwall.cams._engine import resolve_layer

    if isinstance(target_layer, str | nn.Module):
        return [resolve_layer(model, target_layer)]
    if not isinstance(target_layer, Sequence) or not target_layer:
        raise CamwallError(
            "target_layer must be a module, a dotted name like 'features.29', or a non-empty "
            f"list of them; got {target_layer!r}."
        )
    found = [resolve_layer(model, layer) for layer in target_layer]
    ids = [id(m) for _, m in found]
    if len(set(ids)) != len(ids):
        names = [n for n, _ in found]
        raise CamwallError(f"target_layer lists a layer twice: {names}; list each layer once.")
    return found


def whole_map(cls: type[CamMethod]) -> bool:
    """Whether the method makes its final map itself (overrides ``final_map``)."""
    return cls.final_map is not CamMethod.final_map


def check_methods(
    engine: CamEngine,
    classes: Sequence[type[CamMethod]],
    volumes: bool = False,
    eigen_smooth: bool = False,
) -> None:
    """Refuse, before any pass, the methods that cannot run with the engine's options
    (``volumes``: the input is B x C x D x H x W)."""
    several = len(engine.layers) > 1
    for cls in classes:
        if eigen_smooth and whole_map(cls):
            raise CamwallError(
                f"eigen_smooth does not apply to {cls.name} (its map is not a weighted sum of "
                f"channels); call it without eigen_smooth."
            )
        if volumes and not cls.volumetric:
            raise CamwallError(
                f"{cls.name} does not support 3-D inputs (B x C x D x H x W); use one of "
                f"{', '.join(n for n, c in METHODS.items() if c.volumetric)}."
            )
        if several and (cls.reruns_tail or whole_map(cls)):
            raise CamwallError(
                f"{cls.name} does not support several target layers (it re-runs the model from "
                f"one layer's activations or makes its map itself); pass one target_layer."
            )
        if cls.reruns_tail and engine.reshape_transform is not None:
            inverse_of(engine.reshape_transform, cls.name)


def method_map(method: CamMethod, ctxs: Sequence[CamContext], eigen_smooth: bool = False) -> Tensor:
    """The method's final B x H x W (or B x D x H x W) map over one or several target layers."""
    plain = len(ctxs) == 1 and ctxs[0].volume is None and not eigen_smooth
    if whole_map(type(method)) or plain:
        return method.final_map(ctxs[0])
    raws = [layer_raw(method, ctx, eigen_smooth) for ctx in ctxs]
    return combine_layers(raws, ctxs[0].input_shape)


def layer_raw(method: CamMethod, ctx: CamContext, eigen_smooth: bool = False) -> Tensor:
    """One layer's raw map, B x h x w (B x d x h x w for a 3-D layer)."""
    if ctx.volume is not None and not type(method).volumetric:
        raise CamwallError(
            f"{method.name} does not support 3-D (B x K x d x h x w) target layers; use one of "
            f"{', '.join(n for n, c in METHODS.items() if c.volumetric)}."
        )
    raw = eigen_raw(method, ctx) if eigen_smooth else method.raw_map(ctx)
    if ctx.volume is None:
        return raw
    return raw.reshape(raw.shape[0], *ctx.volume)
