"""Decompositions: the first principal component of the activations (eigencam), of
activations x gradients (eigengradcam), and kernel PCA of the activations (kpcacam)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, number, one_of, optional

__all__ = [
    "EigenCAM",
    "EigenGradCAM",
    "KernelPCACAM",
    "SegEigenCAM",
    "first_component",
    "first_component_peak",
]


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run a small CPU decomposition on one thread.

    A few-hundred-wide SVD gains nothing from threads, and on a busy machine LAPACK's thread
    pool can make it 10-100x slower. The previous thread count is restored.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _projection(a: Tensor) -> Tensor:
    """``M v1`` per image, B x (h*w): ``M = a_b`` as (h*w) x K centered per channel, ``v1`` its
    first right singular vector (sign as LAPACK returns it). NaN is treated as 0."""
    a = torch.nan_to_num(a, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    m = a.flatten(2).transpose(1, 2)  # B x hw x K
    m = m - m.mean(dim=1, keepdim=True)
    with _one_thread(m.device):
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
    return (m @ vh[:, 0, :, None])[..., 0]  # B x hw


def first_component(a: Tensor) -> Tensor:
    """Projection of each image's centered feature map on its first principal direction.

    ``M = a_b`` as (h*w) x K, centered per channel; ``v1`` its first right singular vector;
    returns ``M v1`` as B x h x w, with the sign fixed so that it correlates positively with the
    channel mean of ``a_b`` (LAPACK leaves the sign arbitrary).

    Args:
        a: B x K x h x w float tensor (NaN treated as 0, as in pytorch-grad-cam).
    """
    b, _, h, w = a.shape
    proj = _projection(a)
    corr = (proj * torch.nan_to_num(a, nan=0.0).mean(dim=1).flatten(1)).sum(dim=1)
    sign = torch.where(corr < 0, -torch.ones_like(corr), torch.ones_like(corr))
    return (proj * sign[:, None]).view(b, h, w)


def first_component_peak(a: Tensor) -> Tensor:
    """:func:`first_component` with Seg-Eigen-CAM's sign rule (its Eq. 13): the projection is
    negated when ``|min| > |max|``, so that its largest-magnitude values are positive. The rule
    does not depend on LAPACK's sign (negating swaps ``|min|`` and ``|max|``), so the map is
    pytorch-grad-cam's ``get_2d_projection_with_sign_correction`` exactly, ties aside.

    Args:
        a: B x K x h x w float tensor. Returns B x h x w.
    """
    b, _, h, w = a.shape
    proj = _projection(a)
    flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
    return torch.where(flip[:, None], -proj, proj).view(b, h, w)


@METHODS.add
class EigenCAM(CamMethod, name="eigencam"):
    """EigenCAM (Muhammad & Yeasin, 2020, https://arxiv.org/abs/2008.00299).

    ``M = A_b`` as (h*w) x K, centered per channel; ``v1`` its first right singular vector;
    map ``= M v1`` reshaped to h x w.

    Deliberate difference from pytorch-grad-cam: the SVD sign is fixed so that the map correlates
    positively with the channel-mean activation map (the reference leaves it to LAPACK).
    """

    volumetric = True

    def raw_map(self, ctx: CamContext) -> Tensor:
        return first_component(ctx.activations)


@METHODS.add
class EigenGradCAM(CamMethod, name="eigengradcam"):
    """EigenGrad-CAM (pytorch-grad-cam's ``EigenGradCAM``): EigenCAM of ``G * A``.

    ``M = (G * A)_b`` as (h*w) x K, centered per channel; map ``= M v1``. Same deliberate sign
    fix as eigencam (positive correlation with the channel mean of ``G * A``). Computed in float64:
    ``G * A`` spans many orders of magnitude, and a float32 SVD of it is off by up to ~2e-5 on the
    final map (pytorch-grad-cam's own float32 result is, against its float64 result).
    """

    needs_gradient = True
    default = True  # in the default bench: ~0.4 s per 200 images on the shipped pair

    def raw_map(self, ctx: CamContext) -> Tensor:
        assert ctx.gradients is not None
        return first_component(ctx.gradients.double() * ctx.activations.double()).float()


@METHODS.add
class SegEigenCAM(CamMethod, name="segeigencam"):
    """Seg-Eigen-CAM (Chung & Ying, 2025, https://doi.org/10.3390/app15137562), as
    pytorch-grad-cam 1.5.7's ``SegEigenCAM``.

    ``M = (|G| * A)_b`` as (h*w) x K, centered per channel; map ``= M v1``, negated when
    ``|min| > |max|`` (:func:`first_component_peak`). No deliberate difference: the sign rule
    does not depend on LAPACK's sign. Decomposed in float64 (as eigengradcam: ``|G| * A``
    spans many orders of magnitude). ``eigen_smooth`` keeps the map (it is one already), as in
    grad-cam.
    """

    needs_gradient = True
    default = False

    def raw_map(self, ctx: CamContext) -> Tensor:
        assert ctx.gradients is not None
        terms = ctx.gradients.double().abs() * ctx.activations.double()
        return first_component_peak(terms).float()


@METHODS.add
class KernelPCACAM(CamMethod, name="kpcacam"):
    """KPCA-CAM (Karmani et al., 2024, https://arxiv.org/abs/2410.00267), as pytorch-grad-cam.

    ``M = A_b`` as n = h*w rows of K features, centered per channel; kernel
    ``k(u, v) = tanh(gamma u.v + coef0)`` (sigmoid, default ``gamma = 1/K``, ``coef0 = 1``;
    ``kpcacam_kernel="rbf"``: ``exp(-gamma |u - v|^2)``); the kernel matrix is double-centered,
    ``Kc = (I - 1/n) K (I - 1/n)``; with its top eigenpair ``(lambda, v)`` the map is
    ``sqrt(lambda) v``, the sign chosen so that the entry of largest magnitude is positive (as
    scikit-learn's ``KernelPCA``). Computed in float64, batched over images.
    """

    default = False
    options: ClassVar[dict[str, Any]] = {"kpcacam_kernel": "sigmoid", "kpcacam_gamma": None}
    checks: ClassVar[dict[str, Check]] = {
        "kpcacam_kernel": one_of("sigmoid", "rbf"),
        "kpcacam_gamma": optional(number),
    }

    def raw_map(self, ctx: CamContext) -> Tensor:
        a = torch.nan_to_num(ctx.activations, nan=0.0).double()
        b, k, h, w = a.shape
        m = a.flatten(2).transpose(1, 2)  # B x n x K
        m = m - m.mean(dim=1, keepdim=True)
        kc = _center_kernel(self._kernel(m, k))
        with _one_thread(m.device):
            values, vectors = torch.linalg.eigh(kc)
        top, vec = values[:, -1].clamp_min(0), vectors[:, :, -1]  # B, B x n
        pick = vec.abs().argmax(dim=1, keepdim=True)
        vec = vec * torch.sign(vec.gather(1, pick))
        return (vec * top.sqrt()[:, None]).view(b, h, w).float()

    def _kernel(self, m: Tensor, features: int) -> Tensor:
        gamma = self.opts["kpcacam_gamma"]
        gamma = 1.0 / features if gamma is None else float(gamma)
        kind = self.opts["kpcacam_kernel"]
        if kind == "sigmoid":
            return torch.tanh(gamma * (m @ m.transpose(1, 2)) + 1.0)
        return torch.exp(-gamma * torch.cdist(m, m).square())  # "rbf" (the check allows two)


def _center_kernel(kmat: Tensor) -> Tensor:
    """``(I - 1/n) K (I - 1/n)`` per image: subtract row and column means, add the grand mean."""
    rows = kmat.mean(dim=1, keepdim=True)
    cols = kmat.mean(dim=2, keepdim=True)
    return kmat - rows - cols + kmat.mean(dim=(1, 2), keepdim=True)
