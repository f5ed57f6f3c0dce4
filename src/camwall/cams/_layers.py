"""Several target layers: resolving them, checking which methods apply, aggregating maps.

As pytorch-grad-cam 1.5.7 (``BaseCAM.compute_cam_per_layer`` and ``aggregate_multi_layers``):
per layer ``l`` the map ``M_l = up(N(ReLU(raw_l)))`` at the input size; then
``final = N(mean_l max(M_l, 0))``, ``N`` the per-image min-max normalization. One layer gives
exactly :func:`camwall.cams.finalize_maps`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._post import combine_layers
from camwall.cams._reshape import ReshapeTransform
from camwall.cams._smooth import eigen_raw
from camwall.errors import CamwallError, did_you_mean

__all__ = [
    "LayerArg",
    "check_methods",
    "method_map",
    "resolve_layer",
    "resolve_layers",
    "sequential_tail",
]

#: One target layer (a module or a dotted name) or a sequence of them.
LayerArg = nn.Module | str | Sequence[nn.Module | str]


def resolve_layers(model: nn.Module, target_layer: LayerArg) -> list[tuple[str, nn.Module]]:
    """``[(dotted_name, module), ...]`` for one layer or a list of layers (no repeats)."""
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


def check_methods(
    classes: Sequence[type[CamMethod]],
    layers: int = 1,
    reshape_transform: ReshapeTransform | None = None,
    volumes: bool = False,
    eigen_smooth: bool = False,
) -> None:
    """Refuse, before any pass, the methods that cannot run with these options (``layers``
    target layers; ``volumes``: the input is B x C x D x H x W), from the methods' class facts."""
    for cls in classes:
        if eigen_smooth and not cls.eigen_smooth:
            raise CamwallError(
                f"eigen_smooth does not apply to {cls.name} (its map is not a weighted sum of "
                f"channels); call it without eigen_smooth."
            )
        if volumes and not cls.volumetric:
            raise CamwallError(
                f"{cls.name} does not support 3-D inputs (B x C x D x H x W); use one of "
                f"{', '.join(n for n, c in METHODS.items() if c.volumetric)}."
            )
        if layers > 1 and not cls.several_layers:
            raise CamwallError(
                f"{cls.name} does not support several target layers (it re-runs the model from "
                f"one layer's activations or makes its map itself); pass one target_layer."
            )


def method_map(method: CamMethod, ctxs: Sequence[CamContext], eigen_smooth: bool = False) -> Tensor:
    """The method's final B x H x W (or B x D x H x W) map over one or several target layers.

    With several layers the engine first binds each context's runner to its own layer
    (:func:`camwall.cams._perlayer.per_layer`), so that methods re-running the model's tail
    do so from that layer.
    """
    if type(method).spans_layers:
        return method.layers_map(ctxs, eigen_smooth)
    plain = len(ctxs) == 1 and ctxs[0].volume is None and not eigen_smooth
    if type(method).whole_map:
        return method.eigen_map(ctxs[0]) if eigen_smooth else method.final_map(ctxs[0])
    if plain:
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


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Find the target layer by dotted name (``"features.29"``) or by identity.

    Returns:
        ``(dotted_name, module)``.
    """
    if isinstance(target_layer, str):
        try:
            module = model.get_submodule(target_layer)
        except AttributeError:
            choices = [n for n, _ in model.named_modules() if n]
            raise CamwallError(
                f"target_layer {target_layer!r} is not a submodule of "
                f"{type(model).__name__}.{did_you_mean(target_layer, choices)} "
                f"Layers: {', '.join(choices[-12:])}{' ...' if len(choices) > 12 else ''}"
            ) from None
        return target_layer, module
    if not isinstance(target_layer, nn.Module):
        raise CamwallError(
            f"target_layer must be an nn.Module or a dotted name like 'features.29', "
            f"got {type(target_layer).__name__}."
        )
    names = {id(m): n for n, m in reversed(list(model.named_modules()))}
    if id(target_layer) not in names:
        raise CamwallError(
            f"target_layer {type(target_layer).__name__} is not a submodule of "
            f"{type(model).__name__}; pass one of its layers or a dotted name."
        )
    return names[id(target_layer)], target_layer


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def sequential_tail(model: nn.Module, layer_name: str) -> Callable[[Tensor], Any] | None:
    """The part of ``model`` after ``layer_name`` as a callable, if it is a chain of Sequentials.

    Works when the model and every ancestor of the layer are plain ``nn.Sequential`` (e.g.
    ``features.29`` in a Sequential whose ``features`` is a Sequential). Returns ``None`` otherwise.
    """
    if not layer_name:
        return None
    parts = layer_name.split(".")
    chain: list[nn.Module] = []
    parent = model
    for depth, part in enumerate(parts):
        if not _is_plain_sequential(parent):
            return None
        # _modules keeps repeated entries (a shared ReLU), exactly as Sequential.forward runs them
        children = [(n, m) for n, m in parent._modules.items() if m is not None]
        position = [n for n, _ in children].index(part)
        chain.append(nn.Sequential(*[m for _, m in children[position + 1 :]]))
        if depth < len(parts) - 1:
            parent = children[position][1]
    stages = list(reversed(chain))  # deepest first

    def tail(a: Tensor) -> Any:
        out: Any = a
        for stage in stages:
            out = stage(out)
        return out

    return tail
