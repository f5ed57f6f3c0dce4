"""Expected GradCAM at initialization (exact), and the paper's lower bound (Theorem 3).

Setting: ``L = 1``, walled head, filter entries and unmasked head weights i.i.d. ``N(0, tau^2)``.
With ``n_u`` unmasked pooled positions per filter (``h' w' / 2`` for the paper's wall)::

    alpha_v | nothing  ~ N(0, tau^2 n_u / (h w)^2)  i.i.d., independent of the filters
    E[GC_ij | filters] = tau sqrt(n_u) / (sqrt(2 pi) h w) * sqrt(S_ij),  S_ij = sum_v B_v[i,j]^2
    S_ij = tau^2 ||m_ij||^2 R_V,  R_V = sum_v ReLU(Z_v)^2,  Z_v i.i.d. N(0, 1)
    E[sqrt(R_V)] = sum_{n=1..V} C(V, n) 2^-V sqrt(2) Gamma((n+1)/2) / Gamma(n/2)
    E[GC_ij] = tau^2 ||m_ij||_2 sqrt(n_u) / (sqrt(2 pi) h w) * E[sqrt(R_V)]

(``R_V`` is chi-square with ``N ~ Binomial(V, 1/2)`` degrees of freedom.) With ``n_u = h'w'/2``
this is the formula of ``theory.md``: ``sqrt(h'w') / (2 sqrt(pi) h w)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.errors import CamwallError
from camwall.theory._model import conv_output_size, default_wall_rows

__all__ = [
    "expected_gradcam",
    "expected_sqrt_relu_chi2",
    "patch_norms",
    "theorem3_bound",
    "unmasked_positions",
]


def _check_v(filters: int) -> None:
    if int(filters) != filters or filters < 1:
        raise CamwallError(f"filters V={filters} must be a positive integer")


def expected_sqrt_relu_chi2(filters: int) -> float:
    """``E[sqrt(R_V)]`` with ``R_V = sum_{v<V} ReLU(Z_v)^2``, ``Z_v`` i.i.d. ``N(0, 1)``.

    Exact, as the binomial mixture of chi distributions, summed in float64 with log-gamma so
    that it works for any ``V`` (``C(V, n) 2^-V`` underflows nothing)::

        E[sqrt(R_V)] = sum_{n=1..V} C(V, n) 2^-V sqrt(2) Gamma((n+1)/2) / Gamma(n/2)

    It is ``sqrt(V/2) * (1 - 5/(8V) + O(V^-2))``.
    """
    _check_v(filters)
    v = int(filters)
    n = torch.arange(1, v + 1, dtype=torch.float64)
    log_terms = (
        math.lgamma(v + 1)
        - torch.lgamma(n + 1)
        - torch.lgamma(v - n + 1)
        - v * math.log(2.0)
        + 0.5 * math.log(2.0)
        + torch.lgamma((n + 1) / 2)
        - torch.lgamma(n / 2)
    )
    return float(torch.exp(log_terms).sum())


def patch_norms(image: Tensor, kernel_size: int) -> Tensor:
    """``||m_ij||_2`` for every ``k x k`` patch ``m_ij = image[i:i+k, j:j+k]``: ``h x w`` float64.

    Args:
        image: ``H x W`` or ``1 x H x W``.
    """
    x = _image2d(image)
    conv_output_size((x.shape[0], x.shape[1]), kernel_size)
    x = x.to(torch.float64)
    ones = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64, device=x.device)
    sq = F.conv2d((x * x)[None, None], ones)[0, 0]
    return sq.clamp_min(0).sqrt()


def _image2d(image: Tensor) -> Tensor:
    if not isinstance(image, Tensor):
        raise CamwallError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise CamwallError(
            f"image has shape {tuple(image.shape)}; the theory takes one grayscale image, "
            "H x W or 1 x H x W"
        )
    if not torch.isfinite(image).all():
        raise CamwallError("image contains NaN or infinite values")
    return image


def unmasked_positions(
    input_size: tuple[int, int], kernel_size: int, wall_rows: Sequence[int] | None = None
) -> int:
    """``n_u``: pooled positions per filter that the walled head reads (``h'w'/2`` by default)."""
    _, _, hp, wp = conv_output_size(input_size, kernel_size)
    rows = default_wall_rows(hp) if wall_rows is None else tuple(wall_rows)
    if any(not 0 <= p < hp for p in rows):
        raise CamwallError(f"wall_rows {tuple(rows)} are outside the {hp} pooled rows")
    return (hp - len(set(rows))) * wp


def _check_tau(tau: float) -> None:
    if not math.isfinite(tau) or tau <= 0:
        raise CamwallError(f"tau={tau} must be a positive finite number")


def expected_gradcam(
    image: Tensor,
    filters: int,
    kernel_size: int,
    tau: float = 1.0,
    *,
    wall_rows: Sequence[int] | None = None,
) -> Tensor:
    """Exact ``E[GC_ij]`` at initialization: ``h x w`` float64 on ``image.device``.

    ``E[GC_ij] = tau^2 ||m_ij||_2 sqrt(n_u) / (sqrt(2 pi) h w) * E[sqrt(R_V)]`` (module doc).

    Args:
        image: ``H x W`` (or ``1 x H x W``) grayscale image.
        filters: ``V``.
        kernel_size: ``k``; ``h = H - k + 1``, ``h' = h // 2``.
        tau: standard deviation of the filter and head weights.
        wall_rows: walled pooled rows; default the paper's bottom half ``p >= h'/2``.
    """
    _check_v(filters)
    _check_tau(tau)
    x = _image2d(image)
    size = (int(x.shape[0]), int(x.shape[1]))
    h, w, _, _ = conv_output_size(size, kernel_size)
    n_u = unmasked_positions(size, kernel_size, wall_rows)
    scale = tau**2 * math.sqrt(n_u) / (math.sqrt(2 * math.pi) * h * w)
    return scale * expected_sqrt_relu_chi2(filters) * patch_norms(x, kernel_size)


def theorem3_bound(image: Tensor, filters: int, kernel_size: int, tau: float = 1.0) -> Tensor:
    """The paper's lower bound on ``E[GC_ij]`` (Theorem 3): ``h x w`` float64.

    ``sqrt(V - 20 sqrt(V)) * sqrt(h'w' / (16 pi)) * tau^2 / (h w) * ||m_ij||_2``, for the paper's
    wall (bottom half of the pooled rows) and ``L = 1``.

    Raises:
        CamwallError: if ``V <= 400``, where ``V - 20 sqrt(V) <= 0`` and the theorem says nothing.
    """
    _check_v(filters)
    _check_tau(tau)
    if filters <= 400:
        raise CamwallError(
            f"Theorem 3 needs V > 400 filters (V - 20 sqrt(V) > 0); got V={filters}. "
            "Use expected_gradcam for the exact expectation at any V."
        )
    x = _image2d(image)
    h, w, hp, wp = conv_output_size((int(x.shape[0]), int(x.shape[1])), kernel_size)
    scale = (
        math.sqrt(filters - 20 * math.sqrt(filters))
        * math.sqrt(hp * wp / (16 * math.pi))
        * tau**2
        / (h * w)
    )
    return scale * patch_norms(x, kernel_size)
