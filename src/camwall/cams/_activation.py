"""Activation-only channel weights: FEM (k-sigma rule) and the RandomCAM control."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, generator, number, seed
from camwall.cams._checks import generator as check_generator
from camwall.cams._checks import seed as check_seed

__all__ = ["FEM", "RandomCAM", "random_weights"]


@METHODS.add
class FEM(CamMethod, name="fem"):
    """FEM, Feature Explanation Method (Fuad et al., 2020, IPTA), as pytorch-grad-cam.

    Per channel, ``t_bk = mean_ij A_bk + fem_k * std_ij A_bk`` (population std, ``fem_k``
    default 2); ``w_bk = mean_ij [A_bkij > t_bk]`` (the fraction of positions above the
    threshold); map ``= sum_k w_bk A_bk``. No gradient.
    """

    default = True  # in the default bench: ~1.6 s per 200 images on the shipped pair
    options: ClassVar[dict[str, Any]] = {"fem_k": 2.0}
    checks: ClassVar[dict[str, Check]] = {"fem_k": number}

    def weights(self, ctx: CamContext) -> Tensor:
        k = self.opts["fem_k"]
        a = ctx.activations
        mean = a.mean(dim=(2, 3), keepdim=True)
        std = a.std(dim=(2, 3), correction=0, keepdim=True)
        return (a > mean + k * std).float().mean(dim=(2, 3))


def random_weights(b: int, k: int, seed: Any, generator: Any) -> Tensor:
    """B x K float64 weights drawn i.i.d. uniform on [-1, 1), from ``generator`` or ``seed``.

    ``generator`` (a CPU ``torch.Generator``) wins; else a fresh generator seeded with ``seed``
    (default 0, so the control is reproducible).
    """
    if check_generator("generator", generator) is None:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(0 if check_seed("seed", seed) is None else seed)
    return torch.rand((b, k), generator=generator, dtype=torch.float64) * 2 - 1


@METHODS.add
class RandomCAM(CamMethod, name="randomcam"):
    """RandomCAM, a control: random channel weights ``w_bk ~ U[-1, 1)``, map ``= sum_k w_bk A_bk``.

    The draws come from ``generator=`` or ``seed=`` (default seed 0): explicit randomness.
    pytorch-grad-cam draws the same law from numpy's global RNG (``np.random.uniform``); given the
    same draws both give the same map (tested). Weighted sum in float64, as the reference. Random
    signs make the map a small difference of large terms, so calls with randomcam run the model
    on plain inputs (channels-last rounding was amplified to 1.4e-5 on vgg11).
    """

    default = True  # in the default bench: ~0.3 s per 200 images on the shipped pair
    channels_last_ok = False
    stochastic = True
    options: ClassVar[dict[str, Any]] = {"seed": None, "generator": None}
    checks: ClassVar[dict[str, Check]] = {"seed": seed, "generator": generator}

    def weights(self, ctx: CamContext) -> Tensor:
        b, k = ctx.activations.shape[:2]
        w = random_weights(b, k, self.opts["seed"], self.opts["generator"])
        return w.to(ctx.activations.device)

    def raw_map(self, ctx: CamContext) -> Tensor:
        w = self.weights(ctx)
        return (w[:, :, None, None] * ctx.activations.double()).sum(dim=1)
