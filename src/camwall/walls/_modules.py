"""Wall modules: a spatial :class:`Wall` for any CNN and a :class:`WalledLinear` for Flatten heads.

Both hold their wall as structure, not as learned values:

* :class:`Wall` zeroes the blocked positions of every channel of a feature map,
  ``y[b, c, h, w] = 0 if blocked[h, w] else x[b, c, h, w]`` (``masked_fill``, so even an
  ``inf`` cannot leak and the gradient there is exactly 0);
* :class:`WalledLinear` is an ``nn.Linear`` over a flattened ``C x H x W`` map whose weights
  reading blocked positions are 0 and stay 0. Its forward also zeroes those *inputs*, so the
  gradient of those weights is exactly 0 (SGD with momentum and weight decay, Adam and AdamW
  keep them at 0) and a tampered weight still cannot make the output depend on the dead zone.
  :func:`enforce_walls` re-zeroes them after an optimizer step, as the paper does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.errors import CamwallError, did_you_mean
from camwall.walls._spec import WallSpec

__all__ = ["Wall", "WalledLinear", "enforce_walls", "insert_wall", "wall_head", "walls_of"]


class Wall(nn.Module):
    """Zero a fixed spatial region of a ``B x C x H x W`` feature map (all channels).

    ``y = x.masked_fill(blocked[H, W], 0)`` where ``blocked = spec.blocked(H, W)``; the mask is
    built for the size of the map it receives, so one ``Wall`` serves any input size.

    Args:
        spec: the blocked region, in coordinates of the map this module receives.
    """

    def __init__(self, spec: WallSpec) -> None:
        super().__init__()
        self.spec = spec
        self._cache: dict[tuple[int, int, torch.device], Tensor] = {}

    def blocked(self, height: int, width: int, device: torch.device) -> Tensor:
        """Bool ``[height, width]`` mask of the blocked positions (cached per size/device)."""
        key = (height, width, device)
        if key not in self._cache:
            self._cache[key] = self.spec.blocked(height, width, device=device)
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise CamwallError(
                f"Wall expects a feature map ... x H x W, got shape {tuple(x.shape)}; insert the "
                "wall after a convolutional layer, not after Flatten."
            )
        return x.masked_fill(self.blocked(x.shape[-2], x.shape[-1], x.device), 0)

    def extra_repr(self) -> str:
        return self.spec.describe()


class WalledLinear(nn.Linear):
    """``nn.Linear`` over a flattened ``C x H x W`` map, with the weights of a region fixed at 0.

    ``y = W (x * keep) + b`` where ``keep[c*H*W + h*W + w] = not blocked[h, w]``
    (``torch.flatten`` order) and ``W[:, ~keep] == 0`` (set at construction, kept by the zero
    gradient and by :func:`enforce_walls`).

    Args:
        in_features: must equal ``C * H * W`` of ``feature_shape``.
        out_features: output size.
        bias: whether to learn a bias.
        feature_shape: ``(C, H, W)`` of the map that is flattened into this layer.
        wall: the blocked region of that map.
    """

    keep: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        feature_shape: tuple[int, int, int],
        wall: WallSpec,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        c, h, w = (int(v) for v in feature_shape)
        if c * h * w != in_features:
            raise CamwallError(
                f"WalledLinear: feature_shape {feature_shape} has {c * h * w} values but "
                f"in_features is {in_features}; give the (C, H, W) that is flattened into it."
            )
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.feature_shape = (c, h, w)
        self.wall = wall
        # Not persistent: the wall is part of the architecture and is rebuilt from the spec,
        # so a checkpoint cannot change it.
        self.register_buffer("keep", self._keep(self.weight.device), persistent=False)
        self.enforce()

    def _keep(self, device: torch.device) -> Tensor:
        c, h, w = self.feature_shape
        blocked = self.wall.blocked(h, w, device=torch.device("cpu")).expand(c, h, w)
        return ~blocked.reshape(-1).to(device)

    def _apply(self, fn: Any, recurse: bool = True) -> WalledLinear:
        super()._apply(fn, recurse)
        # Rebuild the mask from the spec: ``to_empty`` (after building on the meta device)
        # would leave it uninitialised, and no conversion may change it.
        self.keep = self._keep(self.weight.device)
        return self

    def _walled_weights(self, weight: Tensor | None = None) -> Tensor:
        """View ``[out, C, rows, cols]`` of the walled entries of ``weight`` (default: this
        layer's own ``out x C*H*W`` weight; no copy: the wall is a box)."""
        c, h, w = self.feature_shape
        rows = slice(*self.wall.rows) if self.wall.rows is not None else slice(None)
        cols = slice(*self.wall.cols) if self.wall.cols is not None else slice(None)
        weight = self.weight if weight is None else weight
        return weight.reshape(self.out_features, c, h, w)[:, :, rows, cols]

    @torch.no_grad()
    def enforce(self) -> int:
        """Set the walled weights to exactly 0; returns how many were not 0 before."""
        if self.weight.is_meta:
            return 0
        walled = self._walled_weights()
        broken = int(torch.count_nonzero(walled))
        if broken:
            walled.zero_()
        return broken

    def wall_intact(self) -> bool:
        """Whether every walled weight is exactly 0."""
        return int(torch.count_nonzero(self._walled_weights().detach())) == 0

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.masked_fill(~self.keep, 0), self.weight, self.bias)

    def extra_repr(self) -> str:
        shape = self.feature_shape
        return f"{super().extra_repr()}, feature_shape={shape}, wall={self.wall.describe()}"


def enforce_walls(model: nn.Module) -> int:
    """Re-zero the walled weights of every :class:`WalledLinear` in ``model``.

    Call it after each optimizer step. Returns the number of weights that had to be reset
    (0 when the walls held, which they do with SGD/Adam/AdamW thanks to the zero gradient).
    """
    return sum(m.enforce() for m in model.modules() if isinstance(m, WalledLinear))


def _resolve(model: nn.Module, layer_name: str) -> tuple[nn.Module, str, nn.Module]:
    names = [n for n, _ in model.named_modules() if n]
    if layer_name not in names:
        raise CamwallError(
            f"layer {layer_name!r} not found in {type(model).__name__}."
            f"{did_you_mean(layer_name, names)} Layers: {', '.join(names[:30])}"
            f"{', ...' if len(names) > 30 else ''}."
        )
    parent_name, _, child_name = layer_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, child_name, model.get_submodule(layer_name)


def _record(model: nn.Module, entry: dict[str, Any]) -> None:
    set_walls(model, [*walls_of(model), entry])


def set_walls(model: nn.Module, walls: list[dict[str, Any]]) -> None:
    """Record ``walls`` (JSON-ready dicts) on ``model`` as ``model.camwall_walls``."""
    setattr(model, "camwall_walls", [dict(e) for e in walls])  # noqa: B010


def walls_of(model: nn.Module) -> list[dict[str, Any]]:
    """The walls recorded on ``model`` (JSON-ready): ``[{"kind", "layer", "region", ...}]``."""
    return [dict(e) for e in getattr(model, "camwall_walls", [])]


def insert_wall(model: nn.Module, layer_name: str, region: WallSpec) -> Wall:
    """Insert a :class:`Wall` after the layer ``layer_name`` (dotted name) of any CNN.

    The child is replaced by ``nn.Sequential(child, Wall(region))``, so the original layer is
    then called ``f"{layer_name}.0"`` and the wall ``f"{layer_name}.1"``. Works for torchvision
    ResNets (e.g. ``layer2``), VGG ``features.N`` and any ``nn.Sequential`` index. The region is
    in coordinates of that layer's output map.

    Returns:
        The inserted wall (also recorded in ``model.camwall_walls``).
    """
    parent, child_name, child = _resolve(model, layer_name)
    wall = Wall(region)
    setattr(parent, child_name, nn.Sequential(child, wall))
    _record(model, {"kind": "wall", "layer": layer_name, "region": region.to_dict()})
    return wall


def wall_head(
    model: nn.Module, layer_name: str, feature_shape: tuple[int, int, int], region: WallSpec
) -> WalledLinear:
    """Wall the ``nn.Linear`` called ``layer_name`` that reads a flattened ``C x H x W`` map.

    It is replaced by a :class:`WalledLinear` with the same weights, except that the weights
    reading ``region`` are set to 0 (and kept there).
    """
    parent, child_name, child = _resolve(model, layer_name)
    if not isinstance(child, nn.Linear):
        raise CamwallError(
            f"wall_head: layer {layer_name!r} is a {type(child).__name__}, not nn.Linear; "
            "use insert_wall to wall a feature map."
        )
    new = WalledLinear(
        child.in_features,
        child.out_features,
        bias=child.bias is not None,
        feature_shape=feature_shape,
        wall=region,
        device=child.weight.device,
        dtype=child.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(child.weight)
        if child.bias is not None and new.bias is not None:
            new.bias.copy_(child.bias)
    new.enforce()
    setattr(parent, child_name, new)
    _record(
        model,
        {
            "kind": "linear",
            "layer": layer_name,
            "feature_shape": list(new.feature_shape),
            "region": region.to_dict(),
        },
    )
    return new
