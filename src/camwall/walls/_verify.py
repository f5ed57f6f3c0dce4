"""Empirical check of a dead zone: :func:`verify_wall` perturbs it and compares the logits.

The proof is :func:`~camwall.walls.dead_zone`'s (structural, for the path its one traced
forward took); this is the independent check that the model, run on real numbers, agrees with
it: ordinary draws (logits and gradients), extreme values in the dead zone (logits only), and
a watch on the model's forward for input-dependent paths.

**Extreme values.** After the ordinary trials, the dead zone of the first draw is filled with
each of :data:`EXTREME_VALUES` (``+-1e30``, ``+-`` the float32 maximum, clipped to the model's
dtype) and the logits must again be bit-identical: a branch such as ``if f.mean() > 1e9`` is
taken only there. The gradient is not required at such values (autograd's ``0 x inf`` is NaN
even where the derivative is 0). A NaN or Inf gradient or logit difference in any trial counts
as infinite, never as 0.

**The watch.** Every forward records the layers it runs (forward pre-hooks, this thread only)
and the tensor values the model's code reads into Python (``Tensor.__bool__``, ``.item()``,
...). Layers other than the first forward's (an input-dependent path, which ``dead_zone``'s one
traced forward cannot prove) fail the check; a value read gives a ``UserWarning`` (a possible
data-dependent branch). Both are listed in :attr:`WallCheck.notes`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from camwall.errors import CamwallError
from camwall.walls._deadzone import Target, _device, _eval_mode, _logits, _outputs
from camwall.walls._info import describe

__all__ = ["WallCheck", "verify_wall"]


def _finite(logits: Tensor) -> Tensor:
    """``logits`` if all finite: NaN/Inf for an input in [0, 1] means broken weights, not a
    broken wall (NaN != NaN would otherwise read as a changed output)."""
    if not bool(torch.isfinite(logits).all()):
        raise CamwallError(
            "the model outputs NaN or Inf for an input in [0, 1]; its weights are corrupt "
            "(check them for NaN/Inf), so the wall cannot be verified."
        )
    return logits


@dataclass(frozen=True)
class WallCheck:
    """Result of :func:`verify_wall`.

    Attributes:
        ok: logits bit-identical under every change of the dead zone (ordinary and extreme
            values), the input gradient of the summed logits exactly 0 on the dead zone in
            every ordinary trial, and the same layers run in every forward.
        max_logit_change: ``max |logits(x') - logits(x)|`` over trials (0.0 when ok; inf
            when a changed logit is NaN or Inf).
        max_dead_grad: ``max |d sum(logits) / dx|`` over the dead zone and trials (inf when
            a gradient is NaN or Inf).
        live_grad_max: the same maximum outside the dead zone (> 0 shows the check is not
            vacuous).
        trials: number of random inputs tried.
        dead_pixels: number of dead pixels checked.
        extremes: extreme-value inputs tried per zone (see :func:`verify_wall`).
        notes: what the watch on the forward found (an input-dependent path, a tensor
            value read into Python control flow); empty when nothing.
    """

    ok: bool
    max_logit_change: float
    max_dead_grad: float
    live_grad_max: float
    trials: int
    dead_pixels: int
    extremes: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


#: Values written into the dead zone beside the random draws: a data-dependent branch such
#: as ``if f.mean() > 1e9`` is taken only far outside what noise reaches. Clipped to the
#: model's dtype's range.
EXTREME_VALUES = (
    1e30,
    -1e30,
    float(torch.finfo(torch.float32).max),
    -float(torch.finfo(torch.float32).max),
)

#: Tensor methods that turn a tensor's values into Python values (a branch on data).
_DATA_READS = frozenset({"__bool__", "item", "__float__", "__int__", "__index__", "tolist"})


def _channels(model: nn.Module) -> int:
    shape = describe(model).input_shape
    if shape is not None:
        return int(shape[0])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise CamwallError("verify_wall cannot tell the number of input channels; pass channels=.")


def verify_wall(
    model: nn.Module,
    dead_zone: Tensor,
    trials: int = 8,
    generator: torch.Generator | None = None,
    channels: int | None = None,
    target: Target = None,
) -> WallCheck:
    """Check empirically that ``dead_zone`` cannot change the output of ``model`` (eval mode).

    Each trial draws ``x ~ U[0, 1]^(1 x C x H x W)`` and ``x'`` equal to ``x`` off the dead zone
    and redrawn on it (alternately ``N(0, 10^2)`` noise and zeros), then requires
    ``torch.equal(y(x), y(x'))`` and ``d (r . y(x')) / dx' == 0`` exactly on the dead zone,
    where ``y`` are the checked outputs and ``r`` is all ones (all outputs) or drawn from
    ``U[1, 2]`` per trial (selected outputs, so that no two gradients can cancel).

    Then the logits must stay bit-identical with the dead zone of the first draw set to each
    of :data:`EXTREME_VALUES`, and every forward is watched for input-dependent paths (a
    failure) and tensor values read into Python (a ``UserWarning``); see the module docstring.

    Args:
        model: the network; eval mode during the check, modes restored afterwards.
        dead_zone: bool ``[H, W]`` (the model's input size), True where the input should not
            matter to the ``target`` outputs; or bool ``[K, H, W]``, one dead zone per output
            (``K`` = the number of outputs, e.g. from :func:`dead_zones`): every output is
            checked against its own zone (outputs sharing a zone are checked together).
        trials: number of random inputs (per distinct zone).
        generator: CPU generator for the draws (default: a fresh one seeded 0).
        channels: input channels; default from the model record or its first Conv2d.
        target: with an ``[H, W]`` zone: ``None`` (all outputs), an output index or a list.

    Returns:
        A :class:`WallCheck`; for ``[K, H, W]`` zones its maxima are over every zone and
        ``dead_pixels`` is the sum over the distinct zones.

    Raises:
        CamwallError: a zone that is not bool ``[H, W]`` / ``[K, H, W]``, that the model
        cannot run at (``C x H x W``), or whose ``K`` is not the number of outputs.
    """
    _check_args(dead_zone, trials)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    c = channels if channels is not None else _channels(model)
    _check_zone_fits(model, dead_zone, c)
    checks = [
        _verify_one(model, zone, outputs, trials, gen, c)
        for zone, outputs in _zone_groups(dead_zone, target)
    ]
    notes = tuple(dict.fromkeys(n for ch in checks for n in ch.notes))
    for note in notes:
        warnings.warn(f"verify_wall: {note}", UserWarning, stacklevel=2)
    return _combine(checks, trials, notes)


def _check_args(dead_zone: Any, trials: Any) -> None:
    """A bool ``[H, W]`` / ``[K, H, W]`` tensor and a positive integer number of trials."""
    if (
        not isinstance(dead_zone, Tensor)
        or dead_zone.dtype != torch.bool
        or dead_zone.dim() not in (2, 3)
    ):
        got = (
            f"{dead_zone.dtype} {tuple(dead_zone.shape)}"
            if isinstance(dead_zone, Tensor)
            else type(dead_zone).__name__
        )
        raise CamwallError(
            f"dead_zone must be a bool [H, W] (or [K, H, W], one per output) tensor, got {got}."
        )
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise CamwallError(f"trials must be >= 1 (an integer), got {trials!r}.")


def _combine(checks: list[WallCheck], trials: int, notes: tuple[str, ...]) -> WallCheck:
    """One :class:`WallCheck` for several zones: all ok, the worst maxima, summed pixels."""
    return WallCheck(
        all(ch.ok for ch in checks),
        max(ch.max_logit_change for ch in checks),
        max(ch.max_dead_grad for ch in checks),
        max(ch.live_grad_max for ch in checks),
        trials,
        sum(ch.dead_pixels for ch in checks),
        checks[0].extremes,
        notes,
    )


def _run(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` as a ``1 x K`` row of logits; a model that cannot run at ``x``'s size is a
    CamwallError naming the size (the dead zone's) and the fix."""
    try:
        return _logits(model(x)).reshape(1, -1)
    except RuntimeError as err:
        _, c, h, w = x.shape
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CamwallError(
            f"verify_wall: the model cannot run on a {c} x {h} x {w} input (the dead zone is "
            f"{h} x {w}): {first}. Give a dead zone of the model's input size, e.g. "
            "camwall.walls.dead_zone(model, (C, H, W)), and channels= if C is not recorded."
        ) from None


def _check_zone_fits(model: nn.Module, dead_zone: Tensor, c: int) -> None:
    """The model runs at the zone's ``H x W``; a ``[K, H, W]`` zone has one row per output."""
    h, w = dead_zone.shape[-2:]
    x = torch.zeros(1, c, h, w, device=_device(model), dtype=_dtype(model))
    with torch.no_grad(), _eval_mode(model):
        count = _run(model, x).shape[1]
    if dead_zone.dim() == 3 and dead_zone.shape[0] != count:
        raise CamwallError(
            f"verify_wall: a [K, H, W] dead_zone needs one zone per output, got K = "
            f"{dead_zone.shape[0]} for a model with {count} outputs; use "
            "camwall.walls.dead_zones(model, (C, H, W))."
        )


def _dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _zone_groups(dead_zone: Tensor, target: Target) -> list[tuple[Tensor, Target]]:
    """``[(zone [H, W], its outputs)]``: one entry for a 2-D zone, one per distinct zone of a
    ``[K, H, W]`` stack (with the outputs that share it)."""
    if dead_zone.dim() == 2:
        return [(dead_zone, target)]
    if target is not None:
        raise CamwallError("verify_wall: target is implied by a [K, H, W] dead_zone; omit it.")
    groups: dict[bytes, tuple[Tensor, list[int]]] = {}
    for k, zone in enumerate(dead_zone):
        key = zone.cpu().numpy().tobytes()
        groups.setdefault(key, (zone, []))[1].append(k)
    return list(groups.values())


class _Watch(TorchFunctionMode):
    """Records, for the calling thread, the layers each forward runs and the tensor values
    the model's code reads into Python (:data:`_DATA_READS`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.paths: list[list[str]] = []
        self.reads: set[str] = set()
        self.inside = False
        self.handles = [
            m.register_forward_pre_hook(self._called(name)) for name, m in model.named_modules()
        ]
        self.handles.append(model.register_forward_hook(self._returned))

    def _returned(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() == self.thread:
            self.inside = False

    def _called(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            if threading.get_ident() == self.thread:
                if not name:  # the model itself: a new forward
                    self.paths.append([])
                    self.inside = True
                elif self.paths:
                    self.paths[-1].append(name)

        return hook

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in _DATA_READS and self.inside and threading.get_ident() == self.thread:
            self.reads.add(name)
        return func(*args, **(kwargs or {}))

    def notes(self) -> list[str]:
        out = []
        changed = [i for i, p in enumerate(self.paths) if p != self.paths[0]]
        if changed:
            out.append(
                f"forward {changed[0] + 1} of {len(self.paths)} ran other layers than the first "
                "(an input-dependent path); dead_zone proves the wall only for the path its "
                "traced forward took, so the wall is not verified"
            )
        if self.reads:
            out.append(
                f"the model's forward reads tensor values into Python "
                f"({', '.join(sorted(self.reads))}): a data-dependent branch would not be "
                "covered by dead_zone's proof, which traces one forward"
            )
        return out


@contextmanager
def _watched(model: nn.Module) -> Iterator[_Watch]:
    watch = _Watch(model)
    try:
        with watch:
            yield watch
    finally:
        for handle in watch.handles:
            handle.remove()


def _worst(values: Tensor) -> float:
    """``max(values)``, inf when one is NaN or Inf (a NaN must never read as 0)."""
    if values.numel() == 0:
        return 0.0
    if not bool(values.isfinite().all()):
        return float("inf")
    return float(values.max())


def _verify_one(
    model: nn.Module,
    dead_zone: Tensor,
    target: Target,
    trials: int,
    gen: torch.Generator,
    c: int,
) -> WallCheck:
    """:func:`verify_wall` for one ``[H, W]`` zone and the outputs ``target``."""
    h, w = dead_zone.shape
    device, dtype = _device(model), _dtype(model)
    dead = dead_zone.to(device)
    max_change = max_dead = live_max = 0.0
    first: Tensor | None = None
    with torch.enable_grad(), _eval_mode(model), _watched(model) as watch:
        for t in range(trials):
            x = torch.rand(1, c, h, w, generator=gen).to(device, dtype)
            first = x if first is None else first
            noise = torch.randn(1, c, h, w, generator=gen).to(device, dtype) * 10.0
            x2 = torch.where(dead, noise if t % 2 == 0 else torch.zeros_like(x), x)
            change, grad = _trial(model, x, x2, target, gen)
            max_change = max(max_change, change)
            g = grad.abs()[0]
            max_dead = max(max_dead, _worst(g[:, dead]))
            live_max = max(live_max, _worst(g[:, ~dead]))
        assert first is not None
        values = _extremes(dtype)
        for value in values:
            x2 = torch.where(dead, torch.tensor(value, dtype=dtype, device=device), first)
            max_change = max(max_change, _compare(model, first, x2, target))
    notes = tuple(watch.notes())
    ok = max_change == 0.0 and max_dead == 0.0 and not any("path" in n for n in notes)
    return WallCheck(
        ok, max_change, max_dead, live_max, trials, int(dead.sum()), len(values), notes
    )


def _extremes(dtype: torch.dtype) -> list[float]:
    """:data:`EXTREME_VALUES` clipped to ``dtype``'s range, without repeats."""
    top = float(torch.finfo(dtype).max) if dtype.is_floating_point else float("inf")
    return list(dict.fromkeys(max(-top, min(top, v)) for v in EXTREME_VALUES))


def _compare(model: nn.Module, x: Tensor, x2: Tensor, target: Target) -> float:
    """``max |y(x) - y(x2)|`` over the checked outputs (0.0 when bit-identical, inf when a
    difference is not finite); both forwards without gradients, so with the same kernels."""
    with torch.no_grad():
        y = _finite(_run(model, x))
        y2 = _run(model, x2)
    picked = _outputs(target, y.shape[1])
    if picked is not None:
        y, y2 = y[:, picked], y2[:, picked]
    if torch.equal(y, y2):
        return 0.0
    diff = (y - y2).abs().max()
    return float(diff) if diff.isfinite() else float("inf")


def _trial(
    model: nn.Module, x: Tensor, x2: Tensor, target: Target, gen: torch.Generator
) -> tuple[float, Tensor]:
    """One ordinary trial: the logit change between ``x`` and ``x2`` and the input gradient
    of ``r . y(x2)`` (see :func:`verify_wall`)."""
    change = _compare(model, x, x2, target)
    x2 = x2.detach().requires_grad_(True)
    out = _run(model, x2)
    picked = _outputs(target, out.shape[1])
    if picked is None:
        score = out.sum()
    else:
        weights = 1.0 + torch.rand(len(picked), generator=gen).to(x.device, out.dtype)
        score = (out[:, picked] * weights).sum()
    (grad,) = torch.autograd.grad(score, x2)
    return change, grad.detach()
