"""Wall-leakage metrics and control explanations.

A saliency map ``L`` (``B x H x W``, min-max normalised to [0, 1]) of a walled model should be
exactly zero on the dead zone ``D`` (an ``H x W`` bool mask): the model provably cannot see
those pixels. The metrics below measure how much of the map lies there anyway.

Every metric takes ``(maps, dead_zone)`` and returns one float32 value per image, shape ``B``,
on the maps' device. A map that is zero everywhere (an *empty* map) carries no attribution at
all; every metric returns NaN for it, so that aggregates count it separately (see
:func:`summarize`) instead of silently averaging it in.

The controls are known-answer explanations that sit beside the real methods in the benchmark:

- ``uniform``: a constant map; ``wall_leakage = sqrt(|D| / (H W))`` (49.1% for the paper's
  walled VGG16, whose dead zone is the bottom 54 of 224 rows).
- ``random``: i.i.d. uniform noise in [0, 1), seeded per image so that results do not depend on
  batching or on how images are sharded over processes.

Example::

    from camwall.metrics import METRICS, wall_leakage
    mu = wall_leakage(maps, dead)                   # B values, fractions in [0, 1]
    METRICS.get("wall_leakage").lower_is_better      # True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camwall.errors import CamwallError
from camwall.registry import Registry

__all__ = [
    "CONTROLS",
    "METRICS",
    "Control",
    "Metric",
    "Summary",
    "any_leak",
    "dead_fraction",
    "empty_maps",
    "grid_pointing",
    "l1_leakage",
    "peak_ratio",
    "random_control",
    "relative_leakage",
    "summarize",
    "uniform_control",
    "wall_leakage",
]

MetricFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Metric:
    """A registered metric and its metadata.

    Attributes:
        name: registry name, also the column name in the results store.
        fn: ``fn(maps B x H x W, dead_zone H x W bool) -> Tensor B`` (NaN for empty maps).
        lower_is_better: whether a faithful method scores low.
        category: what it measures (``"leakage"``, ``"detection"``, ``"reference"``).
        description: one line for tables and reports.
        percent: whether reports show it in percent.
        respects_at: if set, a method *respects the wall* on a set of images when this
            metric's mean over them is at or better than this value (at or below it when
            ``lower_is_better``). The bench report's verdict reads it.
        uniform_at: if set, a method does *no better than the uniform control* when this
            metric's mean is at or worse than this value (at or above it when
            ``lower_is_better``). The bench report's verdict reads it.
        zone: what the second argument is: ``"dead"`` (the dead zone) or ``"target"`` (the
            region of the explained output, e.g. the grid cell; such a metric is computed only
            for models whose outputs have regions, NaN elsewhere).
    """

    name: str
    fn: MetricFn
    lower_is_better: bool
    category: str
    description: str
    percent: bool = True
    respects_at: float | None = None
    uniform_at: float | None = None
    zone: str = "dead"

    def __call__(self, maps: Tensor, dead_zone: Tensor) -> Tensor:
        return self.fn(maps, dead_zone)


METRICS: Registry[Metric] = Registry("metric")


def _check(maps: Tensor, dead_zone: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes and return ``(maps float32 B x H x W, dead mask float32 H x W or
    B x H x W)``: one dead zone for every map, or one per map (a per-output wall)."""
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise CamwallError(f"maps must be a B x H x W tensor, got {shape}.")
    if not isinstance(dead_zone, Tensor) or dead_zone.shape not in (maps.shape[1:], maps.shape):
        shape = tuple(dead_zone.shape) if isinstance(dead_zone, Tensor) else "not a tensor"
        raise CamwallError(
            f"dead_zone must be an H x W (or B x H x W, one per map) bool mask matching the "
            f"maps {tuple(maps.shape)}, got {shape}."
        )
    if not torch.isfinite(maps).all():
        what = "NaN" if torch.isnan(maps).any() else "Inf"
        raise CamwallError(f"maps contain {what}; check the saliency method's output.")
    if (maps < 0).any():
        raise CamwallError(
            "maps must be non-negative (min-max normalised to [0, 1]); got negative values."
        )
    return maps.float(), dead_zone.to(device=maps.device, dtype=torch.float32)


def empty_maps(maps: Tensor) -> Tensor:
    """``B`` bools: True where a map is zero everywhere (no attribution at all)."""
    return maps.flatten(1).amax(dim=1) <= 0


def dead_fraction(dead_zone: Tensor) -> float:
    """Fraction of the image covered by the dead zone, ``|D| / (H W)`` (the mean over the
    zones of a ``B x H x W`` stack)."""
    return float(dead_zone.float().mean())


def _nan_empty(values: Tensor, maps: Tensor) -> Tensor:
    return torch.where(empty_maps(maps), torch.full_like(values, math.nan), values)


def wall_leakage(maps: Tensor, dead_zone: Tensor) -> Tensor:
    """The paper's mu: ``||L * D||_2 / ||L||_2`` per image (Table 1 of the paper).

    Args:
        maps: ``B x H x W`` saliency maps, non-negative (min-max normalised to [0, 1]).
        dead_zone: ``H x W`` bool mask of the pixels the model cannot see.

    Returns:
        ``B`` float32 fractions in [0, 1]; 0 for a map that respects the wall, NaN for an
        empty map.
    """
    m, d = _check(maps, dead_zone)
    flat = m.flatten(1)
    dead = (m * d).flatten(1)
    total = flat.norm(dim=1)
    return _nan_empty(dead.norm(dim=1) / total.clamp_min(1e-30), m)


def l1_leakage(maps: Tensor, dead_zone: Tensor) -> Tensor:
    """Mass fraction in the dead zone: ``sum(L * D) / sum(L)`` per image; NaN if empty."""
    m, d = _check(maps, dead_zone)
    total = m.flatten(1).sum(dim=1)
    return _nan_empty((m * d).flatten(1).sum(dim=1) / total.clamp_min(1e-30), m)


def any_leak(maps: Tensor, dead_zone: Tensor) -> Tensor:
    """1.0 where any dead-zone pixel is positive, else 0.0; NaN if empty.

    Averaged over images, it is the fraction of maps that put attribution behind the wall.
    """
    m, d = _check(maps, dead_zone)
    hit = ((m * d).flatten(1) > 0).any(dim=1).float()
    return _nan_empty(hit, m)


def peak_ratio(maps: Tensor, dead_zone: Tensor) -> Tensor:
    """``max(L on D) / max(L)`` per image; 1.0 means the map's peak is behind the wall."""
    m, d = _check(maps, dead_zone)
    peak = m.flatten(1).amax(dim=1)
    return _nan_empty((m * d).flatten(1).amax(dim=1) / peak.clamp_min(1e-30), m)


def relative_leakage(maps: Tensor, dead_zone: Tensor) -> Tensor:
    """``wall_leakage / sqrt(|D| / (H W))``: mu relative to the uniform control (uniform = 1)."""
    frac = dead_zone.float().flatten(-2).mean(-1)  # one fraction, or one per map
    if bool((frac <= 0).any()):
        raise CamwallError(
            "the dead zone is empty, so leakage relative to a uniform map is undefined; "
            "use a walled model."
        )
    return wall_leakage(maps, dead_zone) / frac.to(maps.device).sqrt()


def grid_pointing(maps: Tensor, target_cell: Tensor) -> Tensor:
    """The grid pointing game (Böhle et al., CVPR 2021; DiFull, Rao et al., CVPR 2022): the
    share of positive attribution inside the explained cell, ``sum(L * C) / sum(L)`` per image.

    Args:
        maps: ``B x H x W`` non-negative maps.
        target_cell: bool ``H x W`` or ``B x H x W``: the cell whose logit is explained.

    Returns:
        ``B`` fractions in [0, 1]; 1 = all attribution in the explained cell (higher is
        better), 1/4 for a uniform map on a 2 x 2 grid; NaN for an empty map.
    """
    m, c = _check(maps, target_cell)
    total = m.flatten(1).sum(dim=1)
    return _nan_empty((m * c).flatten(1).sum(dim=1) / total.clamp_min(1e-30), m)


def _add(name: str, fn: MetricFn, lower: bool, category: str, text: str, **meta: Any) -> None:
    METRICS.add(Metric(name, fn, lower, category, text, **meta))


_add("wall_leakage", wall_leakage, True, "leakage", "mu = ||L on dead zone||_2 / ||L||_2")
_add("l1_leakage", l1_leakage, True, "leakage", "share of the map's mass in the dead zone")
# No map with a positive dead-zone pixel (up to float noise): the method respects the wall.
_add(
    "any_leak",
    any_leak,
    True,
    "detection",
    "maps with any positive dead-zone pixel",
    respects_at=1e-6,
)
_add("peak_ratio", peak_ratio, True, "leakage", "max on the dead zone / max overall")
_add(
    "relative_leakage",
    relative_leakage,
    True,
    "reference",
    "mu / mu(uniform map); 1 = as bad as no information",
    percent=False,
    uniform_at=1.0,
)
_add(
    "grid_pointing",
    grid_pointing,
    False,
    "localization",
    "grid pointing game: share of the map in the explained cell (grid models only)",
    zone="target",
)


# --- controls ---------------------------------------------------------------------------------


ControlFn = Callable[[Tensor, Sequence[int], int], Tensor]


@dataclass(frozen=True)
class Control:
    """A known-answer explanation: ``fn(x B x C x H x W, image_ids, seed) -> B x H x W``."""

    name: str
    fn: ControlFn
    description: str

    def __call__(self, x: Tensor, image_ids: Sequence[int], seed: int = 0) -> Tensor:
        return self.fn(x, image_ids, seed)


CONTROLS: Registry[Control] = Registry("control explanation")


def uniform_control(x: Tensor, image_ids: Sequence[int] = (), seed: int = 0) -> Tensor:
    """A constant map of ones, ``B x H x W`` on ``x.device``; mu = sqrt(dead fraction)."""
    del image_ids, seed
    return torch.ones(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)


def random_control(x: Tensor, image_ids: Sequence[int], seed: int = 0) -> Tensor:
    """I.i.d. uniform noise in [0, 1), ``B x H x W``; image ``i`` is seeded ``seed * 1000003 + i``.

    The noise for an image depends only on ``(seed, image id)``, never on the batch it is in.
    """
    if len(image_ids) != x.shape[0]:
        raise CamwallError(
            f"random_control needs one image id per image: got {len(image_ids)} ids for a "
            f"batch of {x.shape[0]}."
        )
    h, w = x.shape[-2], x.shape[-1]
    out = torch.empty(x.shape[0], h, w)
    for row, image in enumerate(image_ids):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(image))
        out[row] = torch.rand(h, w, generator=gen)
    return out.to(x.device)


CONTROLS.add(Control("uniform", uniform_control, "constant map (no information)"))
CONTROLS.add(Control("random", random_control, "i.i.d. uniform noise, seeded"))


# --- aggregation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Aggregate of one metric over images: mean and std (population, ddof=0) of the non-empty
    values, ``n`` non-empty values, and ``empty`` maps left out (NaN values)."""

    mean: float
    std: float
    n: int
    empty: int


def summarize(values: Sequence[float] | Tensor) -> Summary:
    """Mean +- std over the finite values; NaNs (empty maps) are counted in ``empty``."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    ok = ~torch.isnan(v)
    kept = v[ok]
    empty = int((~ok).sum())
    if kept.numel() == 0:
        return Summary(math.nan, math.nan, 0, empty)
    mean = float(kept.mean())
    std = float(kept.std(unbiased=False)) if kept.numel() > 1 else 0.0
    return Summary(mean, std, int(kept.numel()), empty)
