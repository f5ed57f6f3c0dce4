"""FullGrad: input-gradient and bias-gradient maps of every layer, from one backward pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._post import normalize_maps
from camwall.cams._targets import score_rows
from camwall.errors import CamwallError

__all__ = ["FullGrad", "bias_layers", "effective_bias"]


def bias_layers(model: nn.Module) -> list[nn.Module]:
    """Every ``nn.Conv2d`` / ``nn.BatchNorm2d`` (exact types) with a bias, in module order."""
    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module._modules.values():
            if child is None:
                continue
            if type(child) in (nn.Conv2d, nn.BatchNorm2d) and child.bias is not None:
                found.append(child)
            walk(child)

    walk(model)
    return found


def effective_bias(layer: nn.Module) -> Tensor:
    """The bias as the layer applies it: ``b`` (conv), ``b - mu * g / sqrt(var + eps)`` (BN)."""
    if isinstance(layer, nn.BatchNorm2d):
        assert layer.running_mean is not None
        assert layer.running_var is not None
        assert layer.weight is not None
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return (layer.bias - layer.running_mean * scale).detach().float()
    assert isinstance(layer.bias, Tensor)
    return layer.bias.detach().float()


@contextmanager
def _capture_outputs(layers: list[nn.Module], store: list[Tensor]) -> Iterator[None]:
    """Record each layer's output and hand the model a copy, so that a following in-place op
    (``ReLU(inplace=True)``) leaves the recorded tensor, and its gradient, pre-activation."""

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        store.append(output)
        return output.clone()

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _channel_maps_sum(t: Tensor, size: tuple[int, int]) -> Tensor:
    """``sum_c resize(N(t_bc))`` as B x H x W; the resize is linear, so it is done once."""
    b, c, h, w = t.shape
    summed = normalize_maps(t.reshape(b * c, h, w)).view(b, c, h, w).sum(dim=1)
    if (h, w) == size:
        return summed
    return F.interpolate(summed[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


@METHODS.add
class FullGrad(CamMethod, name="fullgrad"):
    """FullGrad (Srinivas & Fleuret, 2019, https://arxiv.org/abs/1905.00780), as pytorch-grad-cam.

    ``S = sum_c N(|x * dy/dx|)_c + sum_l sum_c up(N(|b_lc * dy/dz_l|_c))`` over every Conv2d /
    BatchNorm2d ``l`` with a bias (``z_l`` its output, ``b_l`` its effective bias), ``N`` the
    per-(image, channel) min-max normalization, ``up`` bilinear to H x W; final map ``N(S)``.
    One forward and ONE backward pass give ``dy/dx`` and every ``dy/dz_l``. The target layer
    is ignored (as in grad-cam). Since ``up`` is linear, channels are summed before resizing
    (one resize per layer instead of one per channel; equal to float rounding). The model runs
    on plain (not channels-last) inputs here: see the comment in :meth:`final_map`.
    """

    default = False

    def final_map(self, ctx: CamContext) -> Tensor:
        layers = bias_layers(ctx.engine.model)
        outputs: list[Tensor] = []
        x = ctx.x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), _capture_outputs(layers, outputs):
            # plain memory format: N() stretches nearly constant channels, which turns the
            # ~1e-7 rounding of channels-last convolutions into ~1e-4 on the final map
            logits = ctx.engine.logits(ctx.engine.model(x), x.shape[0])
            total_score = score_rows(logits, range(x.shape[0]), ctx.targets).sum()
        if len(outputs) != len(layers):
            raise CamwallError(
                f"fullgrad needs every biased Conv2d/BatchNorm2d of "
                f"{type(ctx.engine.model).__name__} to run exactly once per forward pass "
                f"({len(layers)} layers, {len(outputs)} calls)."
            )
        grads = torch.autograd.grad(total_score, [x, *outputs], allow_unused=True)
        size = ctx.input_size
        total = _channel_maps_sum((x * _or_zero(grads[0], x)).abs().float(), size)
        for layer, z, g in zip(layers, outputs, grads[1:], strict=True):
            bias = effective_bias(layer)[None, :, None, None]
            total = total + _channel_maps_sum((bias * _or_zero(g, z).float()).abs(), size)
        return normalize_maps(total)


def _or_zero(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g
