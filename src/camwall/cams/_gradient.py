"""The gradient family: one forward and one backward pass serve all of these methods.

Notation: A is the target layer's output (B x K x h x w), G = dy_b/dA_b, S_bk = sum_ij A_bkij.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod

__all__ = [
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ShapleyCAM",
    "XGradCAM",
]


def _grads(ctx: CamContext) -> Tensor:
    assert ctx.gradients is not None, "the engine computes gradients for gradient methods"
    return ctx.gradients


@METHODS.add
class GradCAM(CamMethod, name="gradcam"):
    """Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391).

    ``w_bk = mean_ij G_bkij``; map ``= sum_k w_bk A_bk``.
    """

    needs_gradient = True
    volumetric = True

    def weights(self, ctx: CamContext) -> Tensor:
        return _grads(ctx).mean(dim=(2, 3))


@METHODS.add
class HiResCAM(CamMethod, name="hirescam"):
    """HiResCAM (Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891).

    Elementwise: map ``= sum_k G_bk * A_bk``. Respects the wall: zero where G is zero.
    """

    needs_gradient = True
    volumetric = True

    def weights(self, ctx: CamContext) -> Tensor:
        return _grads(ctx)


@METHODS.add
class GradCAMPlusPlus(CamMethod, name="gradcampp"):
    """Grad-CAM++ (Chattopadhay et al., 2018, https://arxiv.org/abs/1710.11063), closed form.

    ``alpha = G^2 / (2 G^2 + S_bk G^3 + 1e-6)`` (0 where G == 0),
    ``w_bk = sum_ij max(G, 0) * alpha``; map ``= sum_k w_bk A_bk``.
    """

    needs_gradient = True
    volumetric = True

    def weights(self, ctx: CamContext) -> Tensor:
        g = _grads(ctx)
        g2 = g * g
        g3 = g2 * g
        s = ctx.activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + s * g3 + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return (g.clamp_min(0) * alpha).sum(dim=(2, 3))


@METHODS.add
class XGradCAM(CamMethod, name="xgradcam"):
    """XGrad-CAM (Fu et al., 2020, https://arxiv.org/abs/2008.02312).

    ``w_bk = sum_ij(G A) / (S_bk + 1e-7)``; map ``= sum_k w_bk A_bk``.
    """

    needs_gradient = True
    volumetric = True

    def weights(self, ctx: CamContext) -> Tensor:
        a = ctx.activations
        s = a.sum(dim=(2, 3), keepdim=True)
        return (_grads(ctx) * a / (s + 1e-7)).sum(dim=(2, 3))


@METHODS.add
class LayerCAM(CamMethod, name="layercam"):
    """LayerCAM (Jiang et al., 2021, https://ieeexplore.ieee.org/document/9462463).

    Elementwise: map ``= sum_k max(G_bk, 0) * A_bk``. Respects the wall.
    """

    needs_gradient = True
    volumetric = True

    def weights(self, ctx: CamContext) -> Tensor:
        return _grads(ctx).clamp_min(0)


@METHODS.add
class GradCAMElementWise(CamMethod, name="gradcamelementwise"):
    """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``).

    map ``= sum_k max(G_bk * A_bk, 0)``: the ReLU is taken per element, before the channel sum.
    """

    needs_gradient = True
    volumetric = True
    default = True  # in the default bench: ~0.3 s per 200 images on the shipped pair

    def weighted(self, ctx: CamContext) -> Tensor:
        return (_grads(ctx) * ctx.activations).clamp_min(0)

    def raw_map(self, ctx: CamContext) -> Tensor:
        return self.weighted(ctx).sum(dim=1)


@METHODS.add
class ShapleyCAM(CamMethod, name="shapleycam"):
    """ShapleyCAM (Cai et al., 2025, https://arxiv.org/abs/2501.06261).

    ``w_bk = mean_ij (G - 0.5 * H A)_bkij`` with ``H A`` the Hessian of ``y_b`` with respect to
    ``A_b`` applied to ``A_b`` (one batched double-backward in the engine); map
    ``= sum_k w_bk A_bk``. Equals gradcam when the part after the layer is piecewise linear.
    """

    needs_gradient = True
    needs_hvp = True
    default = False

    def weights(self, ctx: CamContext) -> Tensor:
        hvp = ctx.extras.hvp
        assert hvp is not None, "the engine computes the Hessian-vector product"
        return (_grads(ctx) - 0.5 * hvp).mean(dim=(2, 3))
