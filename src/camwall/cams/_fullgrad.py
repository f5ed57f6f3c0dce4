"""FullGrad: input-gradient and bias-gradient maps of every layer, from the shared pass."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._biases import effective_bias
from camwall.cams._post import normalize_maps

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
        extras = ctx.extras
        assert extras.input_gradient is not None, "the engine computes dy/dx for fullgrad"
        size = ctx.input_size
        x = ctx.x.float()
        total = _channel_maps_sum((x * extras.input_gradient.float()).abs(), size)
        for layer, g in extras.bias_gradients:
            if g is None:  # the layer does not reach the target score
                continue
            bias = effective_bias(layer).to(g.device)[None, :, None, None]
            total = total + _channel_maps_sum((bias * g.float()).abs(), size)
        return normalize_maps(total)
