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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.errors import CamwallError, did_you_mean
from camwall.walls._info import declare, describe
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

    One wall for all outputs: ``y = W (x * keep) + b`` where ``keep[c*H*W + h*W + w] = not
    blocked[h, w]`` (``torch.flatten`` order) and ``W[:, ~keep] == 0`` (set at construction,
    kept by the zero gradient and by :func:`enforce_walls`).

    A wall per output (``wall`` a sequence of ``G`` specs): the outputs are split into ``G``
    equal consecutive groups, and group ``g`` (outputs ``g*out/G .. (g+1)*out/G - 1``) reads
    only the cells that ``wall[g]`` leaves open: ``y_g = W_g (x * keep_g) + b_g`` with
    ``W_g[:, ~keep_g] == 0``. So output ``o`` provably sees only the open region of its group.

    Args:
        in_features: must equal ``C * H * W`` of ``feature_shape``.
        out_features: output size (a multiple of the number of walls).
        bias: whether to learn a bias.
        feature_shape: ``(C, H, W)`` of the map that is flattened into this layer.
        wall: the blocked region of that map, or one region per output group.
    """

    keep: Tensor
    group_keep: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        feature_shape: tuple[int, int, int],
        wall: WallSpec | Sequence[WallSpec],
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        c, h, w = (int(v) for v in feature_shape)
        if c * h * w != in_features:
            raise CamwallError(
                f"WalledLinear: feature_shape {feature_shape} has {c * h * w} values but "
                f"in_features is {in_features}; give the (C, H, W) that is flattened into it."
            )
        walls = (wall,) if isinstance(wall, WallSpec) else tuple(wall)
        if not walls or out_features % len(walls):
            raise CamwallError(
                f"WalledLinear: {len(walls)} per-output walls do not split {out_features} "
                "outputs into equal groups; give one wall per group of outputs."
            )
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.feature_shape = (c, h, w)
        self.walls = walls
        self.wall = walls[0]  # the wall of every output when there is one
        # Not persistent: the wall is part of the architecture and is rebuilt from the spec,
        # so a checkpoint cannot change it.
        self.register_buffer("keep", self._keep(self.weight.device)[0], persistent=False)
        self.register_buffer("group_keep", self._keep(self.weight.device), persistent=False)
        self.enforce()

    @property
    def per_output(self) -> bool:
        """Whether each group of outputs has its own wall."""
        return len(self.walls) > 1

    def _keep(self, device: torch.device) -> Tensor:
        """Bool ``[G, C*H*W]``: True where group ``g`` reads the input (row 0 is the union
        when there is one group)."""
        c, h, w = self.feature_shape
        cpu = torch.device("cpu")
        rows = [~spec.blocked(h, w, device=cpu).expand(c, h, w).reshape(-1) for spec in self.walls]
        return torch.stack(rows).to(device)

    def _apply(self, fn: Any, recurse: bool = True) -> WalledLinear:
        super()._apply(fn, recurse)
        # Rebuild the masks from the specs: ``to_empty`` (after building on the meta device)
        # would leave them uninitialised, and no conversion may change them.
        self.group_keep = self._keep(self.weight.device)
        self.keep = self.group_keep.any(0)
        return self

    def output_groups(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]``: the outputs of each wall, in order."""
        size = self.out_features // len(self.walls)
        return [(g * size, (g + 1) * size) for g in range(len(self.walls))]

    def _walled_pieces(self, weight: Tensor | None = None) -> list[Tensor]:
        """The walled entries of ``weight`` (default: this layer's own ``out x C*H*W``
        weight), as views where the wall is one box for all outputs (no copy), else per group."""
        weight = self.weight if weight is None else weight
        c, h, w = self.feature_shape
        spec = self.walls[0]
        if not self.per_output and spec.mask is None and not spec.outside:
            rows = slice(*spec.rows) if spec.rows is not None else slice(None)
            cols = slice(*spec.cols) if spec.cols is not None else slice(None)
            return [weight.reshape(self.out_features, c, h, w)[:, :, rows, cols]]
        blocked = ~self.group_keep.to(weight.device)
        return [
            weight[a:b].index_select(1, blocked[g].nonzero().flatten())
            for g, (a, b) in enumerate(self.output_groups())
        ]

    def walled_stats(self, weight: Tensor | None = None) -> tuple[int, float]:
        """``(number of walled weights that are not 0, their max |w|)`` of ``weight``."""
        pieces = [p.detach() for p in self._walled_pieces(weight)]
        count = sum(int(torch.count_nonzero(p)) for p in pieces)
        worst = max((float(p.abs().max()) for p in pieces if p.numel()), default=0.0)
        return count, worst

    @torch.no_grad()
    def enforce(self) -> int:
        """Set the walled weights to exactly 0; returns how many were not 0 before."""
        if self.weight.is_meta:
            return 0
        broken, _ = self.walled_stats()
        if broken:
            for g, (a, b) in enumerate(self.output_groups()):
                self.weight[a:b].masked_fill_(~self.group_keep[g], 0)
        return broken

    def wall_intact(self) -> bool:
        """Whether every walled weight is exactly 0."""
        return self.walled_stats()[0] == 0

    def wall_entry(self, layer: str) -> dict[str, Any]:
        """The JSON record of this wall: ``{"kind": "linear", "layer", "feature_shape",
        "region"}``, or ``"per_output": [{"outputs": [start, stop], "region"}, ...]`` instead
        of ``"region"`` for per-output walls."""
        entry: dict[str, Any] = {
            "kind": "linear",
            "layer": layer,
            "feature_shape": list(self.feature_shape),
        }
        if not self.per_output:
            return {**entry, "region": self.wall.to_dict()}
        groups = [
            {"outputs": [a, b], "region": spec.to_dict()}
            for (a, b), spec in zip(self.output_groups(), self.walls)
        ]
        return {**entry, "per_output": groups}

    def forward(self, x: Tensor) -> Tensor:
        if not self.per_output:
            return F.linear(x.masked_fill(~self.keep, 0), self.weight, self.bias)
        g = len(self.walls)
        xs = x.unsqueeze(-2).masked_fill(~self.group_keep, 0)  # ... x G x in
        weight = self.weight.reshape(g, self.out_features // g, self.in_features)
        y = torch.einsum("...gi,goi->...go", xs, weight).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        shape = self.feature_shape
        walls = " | ".join(spec.describe() for spec in self.walls)
        return f"{super().extra_repr()}, feature_shape={shape}, wall={walls}"


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
    """Record ``walls`` (JSON-ready dicts) as ``describe(model).walls``."""
    declare(model, walls=tuple(walls))


def walls_of(model: nn.Module) -> list[dict[str, Any]]:
    """The walls recorded on ``model`` (JSON-ready): ``[{"kind", "layer", "region", ...}]``."""
    return describe(model).wall_list()


def insert_wall(model: nn.Module, layer_name: str, region: WallSpec) -> Wall:
    """Insert a :class:`Wall` after the layer ``layer_name`` (dotted name) of any CNN.

    The child is replaced by ``nn.Sequential(child, Wall(region))``, so the original layer is
    then called ``f"{layer_name}.0"`` and the wall ``f"{layer_name}.1"``. Works for torchvision
    ResNets (e.g. ``layer2``), VGG ``features.N`` and any ``nn.Sequential`` index. The region is
    in coordinates of that layer's output map.

    Returns:
        The inserted wall (also recorded in ``describe(model).walls``).
    """
    parent, child_name, child = _resolve(model, layer_name)
    wall = Wall(region)
    setattr(parent, child_name, nn.Sequential(child, wall))
    _record(model, {"kind": "wall", "layer": layer_name, "region": region.to_dict()})
    return wall


def wall_head(
    model: nn.Module,
    layer_name: str,
    feature_shape: tuple[int, int, int],
    region: WallSpec | Sequence[WallSpec],
) -> WalledLinear:
    """Wall the ``nn.Linear`` called ``layer_name`` that reads a flattened ``C x H x W`` map.

    It is replaced by a :class:`WalledLinear` with the same weights, except that the weights
    reading ``region`` are set to 0 (and kept there). A sequence of regions walls each group
    of outputs separately (see :class:`WalledLinear`).
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
    _record(model, new.wall_entry(layer_name))
    return new
