"""FullGrad: input-gradient and bias-gradient maps of every layer, from the shared pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._biases import effective_bias
from camwall.cams._eigen import first_component
from camwall.cams._post import normalize_maps
from camwall.errors import CamwallError

__all__ = ["FullGrad"]


def _channel_maps_sum(t: Tensor, size: tuple[int, int]) -> Tensor:
    """``sum_c up(N(t_bc))`` as B x H x W; ``up`` is linear, so it runs once, after the sum."""
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
    The engine's one forward and ONE backward pass give ``dy/dx`` and every ``dy/dz_l`` (shared
    with the gradient methods of the same call). The target layer is ignored (as in grad-cam).
    Channels are summed before resizing (one resize per layer, not per channel; equal to float
    rounding). Calls that include fullgrad feed the model plain (not channels-last) inputs:
    ``N`` stretches nearly constant channels, which turned channels-last rounding (~1e-7) into
    ~1e-4 on resnet18's final map.
    """

    default = True  # in the default bench: ~1.2 s per 200 images on the shipped pair
    needs_bias_gradients = True
    channels_last_ok = False

    def final_map(self, ctx: CamContext) -> Tensor:
        terms = self._terms(ctx, per_channel=False)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return normalize_maps(total)

    def eigen_map(self, ctx: CamContext) -> Tensor:
        """``eigen_smooth``, as pytorch-grad-cam: the C input-gradient channel maps and the L
        layer maps (each ``sum_c up(N(.))``), each normalized and resized to H/8 x W/8, their
        first principal component ``P`` (:func:`first_component`, camwall's sign rule), then
        ``N(up(N(P)))`` at H x W (no ReLU, as grad-cam's FullGrad)."""
        h, w = ctx.input_size
        if h < 8 or w < 8:
            raise CamwallError(
                f"fullgrad's eigen_smooth decomposes its maps at H/8 x W/8; the input is "
                f"{h} x {w}: use inputs of at least 8 x 8 or call it without eigen_smooth."
            )
        maps = torch.cat(self._terms(ctx, per_channel=True), dim=1)  # B x (C + L) x H x W
        b, n = maps.shape[:2]
        small = _resize(normalize_maps(maps.reshape(b * n, h, w)), (h // 8, w // 8))
        proj = first_component(small.view(b, n, h // 8, w // 8).double()).float()
        return normalize_maps(_resize(normalize_maps(proj), (h, w)))

    def _terms(self, ctx: CamContext, per_channel: bool) -> list[Tensor]:
        """The input-gradient term (B x H x W, or B x C x H x W per channel) and one
        B x H x W (B x 1 x H x W) term per biased layer that reaches the score."""
        extras = ctx.extras
        assert extras.input_gradient is not None, "the engine computes dy/dx for fullgrad"
        size = ctx.input_size
        x = ctx.x.float()
        grad_input = (x * extras.input_gradient.float()).abs()
        if per_channel:
            b, c, h, w = grad_input.shape
            terms = [normalize_maps(grad_input.reshape(b * c, h, w)).view(b, c, h, w)]
        else:
            terms = [_channel_maps_sum(grad_input, size)]
        for layer, g in extras.bias_gradients:
            if g is None:  # the layer does not reach the target score
                continue
            bias = effective_bias(layer).to(g.device)[None, :, None, None]
            term = _channel_maps_sum((bias * g.float()).abs(), size)
            terms.append(term[:, None] if per_channel else term)
        return terms


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of N x h x w maps (as cv2.resize INTER_LINEAR); same size: unchanged."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
