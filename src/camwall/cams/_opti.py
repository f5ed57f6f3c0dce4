"""Opti-CAM: channel weights optimized so that the masked input maximizes the target score."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, one_of, positive, positive_int, seed
from camwall.cams._targets import score_rows

__all__ = ["OptiCAM", "opticam_masks"]

_EPS = 1e-7


def opticam_masks(features: Tensor, u: Tensor, size: tuple[int, int]) -> Tensor:
    """The Opti-CAM saliency map for weights ``u``.

    ``S = sum_k softmax_k(u)_k F_k`` upsampled (bilinear, align_corners=False) to ``size``, then
    ``n(S) = (S - min) / (max - min + 1e-7)`` per image.

    Args:
        features: N x K x h x w non-negative features (ReLU of the activations).
        u: N x K logits of the channel weights.
        size: ``(H, W)``.

    Returns:
        N x 1 x H x W maps in [0, 1].
    """
    weights = torch.softmax(u, dim=1)
    s = (weights[:, :, None, None] * features).sum(dim=1, keepdim=True)
    s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
    flat = s.flatten(1)
    lo = flat.amin(dim=1)[:, None, None, None]
    hi = flat.amax(dim=1)[:, None, None, None]
    return (s - lo) / (hi - lo + _EPS)


@METHODS.add
class OptiCAM(CamMethod, name="opticam"):
    """Opti-CAM (Zhang et al., 2024, https://arxiv.org/abs/2301.07002).

    ``F = ReLU(A)``; parameters ``u`` (B x K, start 0.5, or uniform [0, 1) with ``opticam_init=
    "random"`` and ``seed``); ``x' = n(S(u)) * x``; maximize ``y_b(model(x'))`` with Adam
    (``opticam_lr`` 0.1, ``opticam_iters`` 50). Every ``iters // 10`` steps an image whose
    objective got worse since the last check stops. The output is ``n(S)`` with the best
    objective seen. Each image is optimised on its own (one-image model runs, from its own
    one-image pass), so its map does not depend on the other images of the batch (the
    authors' code couples the batch; batched runs would also differ by the kernels' rounding,
    which the optimisation amplifies).
    """

    options: ClassVar[dict[str, Any]] = {
        "opticam_iters": 50,
        "opticam_lr": 0.1,
        "opticam_init": "constant",
        "seed": None,
    }
    checks: ClassVar[dict[str, Check]] = {
        "opticam_iters": positive_int,
        "opticam_lr": positive,
        "opticam_init": one_of("constant", "random"),
        "seed": seed,
    }
    stochastic = True

    def _start(self, b: int, k: int, device: torch.device) -> Tensor:
        if self.opts["opticam_init"] == "constant":
            return torch.full((b, k), 0.5, device=device)
        seed = self.opts["seed"]
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else int(seed))
        return torch.rand((b, k), generator=gen).to(device)

    def final_map(self, ctx: CamContext) -> Tensor:
        b, k = ctx.activations.shape[:2]
        starts = self._start(b, k, ctx.x.device)
        return torch.stack([self._image_map(ctx, i, starts[i : i + 1]) for i in range(b)])

    def _image_map(self, ctx: CamContext, i: int, u: Tensor) -> Tensor:
        """Image ``i``'s optimisation, on its own: its own one-image pass gives its features,
        and every model run sees that image alone, so the map does not depend on the batch
        (the same kernels as a one-image call, bit for bit). Returns the H x W map."""
        iters, lr = self.opts["opticam_iters"], float(self.opts["opticam_lr"])
        x = ctx.x[i : i + 1]
        own = ctx.runner.capture(x, [ctx.targets[i]], False)
        feats, xf = own.activations.clamp_min(0), x.float()
        m1, m2 = torch.zeros_like(u), torch.zeros_like(u)
        best_obj, last_obj = -math.inf, -math.inf
        best_map = torch.zeros(*ctx.input_size, device=x.device)
        check = max(1, iters // 10)
        for step in range(1, iters + 1):
            obj, grad, masks = self._objective(own, feats, u, xf, [0])
            value = float(obj[0])
            if value > best_obj:
                best_obj, best_map = value, masks[0, 0]
            m1, m2, u = _adam(m1, m2, u, grad, step, lr)
            if step % check == 0:
                if value < last_obj:  # worse than at the last check: this image stops
                    break
                last_obj = value
        return best_map

    def _objective(
        self, ctx: CamContext, feats: Tensor, u: Tensor, xf: Tensor, rows: list[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(y_b(model(n(S(u)) * x)), its gradient in u, n(S(u)))`` for the images ``rows``."""
        x = ctx.x
        ui = u.detach().requires_grad_(True)
        with torch.enable_grad():
            masks = opticam_masks(feats, ui, ctx.input_size)
            logits = ctx.runner.run_model((masks * xf).to(x.dtype))
            obj = score_rows(logits, rows, ctx.targets)
            (grad,) = torch.autograd.grad(-obj.sum(), ui)
        return obj.detach(), grad, masks.detach()


def _adam(
    m1: Tensor, m2: Tensor, u: Tensor, grad: Tensor, step: int, lr: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step (betas 0.9, 0.999, eps 1e-8), elementwise: ``(m1, m2, u)`` updated."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m1 = beta1 * m1 + (1 - beta1) * grad
    m2 = beta2 * m2 + (1 - beta2) * grad * grad
    m1_hat = m1 / (1 - beta1**step)
    m2_hat = m2 / (1 - beta2**step)
    return m1, m2, u - lr * m1_hat / (m2_hat.sqrt() + eps)
