"""Empirical check of a dead zone: :func:`verify_wall` perturbs it and compares the logits.

The proof is :func:`~camwall.walls.dead_zone`'s (structural); this is the independent check
that the model, run on real numbers, agrees with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

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
        ok: logits bit-identical under every change of the dead zone, and the input gradient
            of the summed logits exactly 0 on the dead zone, in every trial.
        max_logit_change: ``max |logits(x') - logits(x)|`` over trials (0.0 when ok).
        max_dead_grad: ``max |d sum(logits) / dx|`` over the dead zone and trials.
        live_grad_max: the same maximum outside the dead zone (> 0 shows the check is not
            vacuous).
        trials: number of random inputs tried.
        dead_pixels: number of dead pixels checked.
    """

    ok: bool
    max_logit_change: float
    max_dead_grad: float
    live_grad_max: float
    trials: int
    dead_pixels: int


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

    Args:
        model: the network; eval mode during the check, modes restored afterwards.
        dead_zone: bool ``[H, W]``, True where the input should not matter to the ``target``
            outputs; or bool ``[K, H, W]``, one dead zone per output (e.g. from
            :func:`dead_zones`): every output is checked against its own zone (outputs sharing
            a zone are checked together).
        trials: number of random inputs (per distinct zone).
        generator: CPU generator for the draws (default: a fresh one seeded 0).
        channels: input channels; default from the model record or its first Conv2d.
        target: with an ``[H, W]`` zone: ``None`` (all outputs), an output index or a list.

    Returns:
        A :class:`WallCheck`; for ``[K, H, W]`` zones its maxima are over every zone and
        ``dead_pixels`` is the sum over the distinct zones.
    """
    if dead_zone.dtype != torch.bool or dead_zone.dim() not in (2, 3):
        raise CamwallError(
            f"dead_zone must be a bool [H, W] (or [K, H, W], one per output) tensor, got "
            f"{dead_zone.dtype} {tuple(dead_zone.shape)}."
        )
    if trials < 1:
        raise CamwallError(f"trials must be >= 1, got {trials}.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    c = channels if channels is not None else _channels(model)
    checks = [
        _verify_one(model, zone, outputs, trials, gen, c)
        for zone, outputs in _zone_groups(dead_zone, target)
    ]
    return WallCheck(
        all(ch.ok for ch in checks),
        max(ch.max_logit_change for ch in checks),
        max(ch.max_dead_grad for ch in checks),
        max(ch.live_grad_max for ch in checks),
        trials,
        sum(ch.dead_pixels for ch in checks),
    )


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
    device = _device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    dead = dead_zone.to(device)
    max_change = max_dead = live_max = 0.0
    with torch.enable_grad(), _eval_mode(model):
        for t in range(trials):
            x = torch.rand(1, c, h, w, generator=gen).to(device, dtype)
            noise = torch.randn(1, c, h, w, generator=gen).to(device, dtype) * 10.0
            x2 = torch.where(dead, noise if t % 2 == 0 else torch.zeros_like(x), x)
            x2.requires_grad_(True)
            with torch.no_grad():  # both forwards in the same mode, so the same kernels
                y = _finite(_logits(model(x))).reshape(1, -1)
                y2 = _logits(model(x2)).reshape(1, -1)
            picked = _outputs(target, y.shape[1])
            out = _logits(model(x2)).reshape(1, -1)
            if picked is None:
                score = out.sum()
            else:
                y, y2 = y[:, picked], y2[:, picked]
                weights = 1.0 + torch.rand(len(picked), generator=gen).to(device, out.dtype)
                score = (out[:, picked] * weights).sum()
            (grad,) = torch.autograd.grad(score, x2)
            if not torch.equal(y, y2):
                diff = (y - y2).abs().max()
                max_change = max(max_change, float(diff) if diff.isfinite() else float("inf"))
            g = grad.detach().abs()[0]
            if bool(dead.any()):
                max_dead = max(max_dead, float(g[:, dead].max()))
            if bool((~dead).any()):
                live_max = max(live_max, float(g[:, ~dead].max()))
    ok = max_change == 0.0 and max_dead == 0.0
    return WallCheck(ok, max_change, max_dead, live_max, trials, int(dead.sum()))
