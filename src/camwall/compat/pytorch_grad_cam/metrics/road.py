"""ROAD: RemOve And Debias (Rong et al., 2022, https://arxiv.org/abs/2202.00449).

Removed pixels are filled by *noisy linear imputation*: each missing pixel is the weighted mean
of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonals; missing
neighbours are unknowns, neighbours outside the image drop out of the weight sum), solved as one
sparse linear system per image for all channels (scipy), plus ``noise * N(0, 1)`` (torch's
global RNG, as grad-cam).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from camwall.compat.pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from camwall.errors import CamwallError

__all__ = [
    "NoisyLinearImputer",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "neighbors_weights",
]

_DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

#: ``((row offset, column offset), weight)`` of the 8 neighbours (grad-cam's order).
neighbors_weights = [
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
]


def _linear_system(keep: np.ndarray, img: np.ndarray):
    """``(A, b, missing)``: ``A x = b`` for the missing pixels (``keep == 0``) of a C x H x W
    image, ``A`` sparse (N x N), ``b`` N x C, ``missing`` the flat pixel indices."""
    from scipy.sparse import csc_matrix

    h, w = keep.shape
    flat_keep = keep.reshape(-1)
    pixels = img.reshape(img.shape[0], -1)
    missing = np.flatnonzero(flat_keep == 0)
    unknown = np.zeros(flat_keep.size, dtype=np.int64)
    unknown[missing] = np.arange(len(missing))
    n = len(missing)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    diagonal = np.ones(n)
    b = np.zeros((n, img.shape[0]))
    for (dy, dx), weight in neighbors_weights:
        y, x = missing // w + dy, missing % w + dx
        inside = (y >= 0) & (x >= 0) & (y < h) & (x < w)
        diagonal[~inside] -= weight
        eq = np.flatnonzero(inside)
        nb = (missing + dy * w + dx)[inside]
        known = flat_keep[nb] > 0.5
        b[eq[known]] -= weight * pixels[:, nb[known]].T
        free = flat_keep[nb] < 0.5
        rows.append(eq[free])
        cols.append(unknown[nb[free]])
        vals.append(np.full(int(free.sum()), weight))
    data = np.concatenate([-diagonal, *vals])
    a = csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return a, b, missing


class NoisyLinearImputer:
    """``imputer(img C x H x W, keep H x W)`` -> the image with the pixels where ``keep == 0``
    imputed (see the module docstring)."""

    def __init__(self, noise: float = 0.01, weighting: Sequence | None = None) -> None:
        self.noise = noise
        self.weighting = neighbors_weights  # grad-cam also ignores the argument

    def __call__(self, img: Tensor, mask: Tensor) -> Tensor:
        try:
            from scipy.sparse.linalg import spsolve
        except ImportError:
            raise CamwallError("ROAD's linear imputation needs scipy: pip install scipy.") from None
        a, b, missing = _linear_system(mask.cpu().numpy(), img.cpu().numpy())
        solved = torch.tensor(spsolve(a, b), dtype=torch.float).reshape(len(missing), -1).t()
        filled = img.reshape(img.shape[0], -1).clone()
        filled[:, missing] = solved + self.noise * torch.randn_like(solved)
        return filled.reshape_as(img)


class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """Score change after imputing the pixels above the ``percentile``-th CAM percentile."""

    def __init__(self, percentile: float = 80) -> None:
        super().__init__(RemoveMostRelevantFirst(percentile, NoisyLinearImputer()))


class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """Score change after imputing the pixels below the ``percentile``-th CAM percentile."""

    def __init__(self, percentile: float = 20) -> None:
        super().__init__(RemoveLeastRelevantFirst(percentile, NoisyLinearImputer()))


class ROADMostRelevantFirstAverage(AveragerAcrossThresholds):
    """:class:`ROADMostRelevantFirst` averaged over ``percentiles``."""

    def __init__(self, percentiles: Sequence[float] = _DEFAULT_PERCENTILES) -> None:
        super().__init__(ROADMostRelevantFirst, percentiles)


class ROADLeastRelevantFirstAverage(AveragerAcrossThresholds):
    """:class:`ROADLeastRelevantFirst` averaged over ``percentiles``."""

    def __init__(self, percentiles: Sequence[float] = _DEFAULT_PERCENTILES) -> None:
        super().__init__(ROADLeastRelevantFirst, percentiles)


class ROADCombined:
    """``(LeRF average - MoRF average) / 2`` over ``percentiles``."""

    def __init__(self, percentiles: Sequence[float] = _DEFAULT_PERCENTILES) -> None:
        self.percentiles = percentiles
        self.morf_averager = ROADMostRelevantFirstAverage(percentiles)
        self.lerf_averager = ROADLeastRelevantFirstAverage(percentiles)

    def __call__(self, input_tensor: Tensor, cams: np.ndarray, targets, model) -> np.ndarray:
        lerf = self.lerf_averager(input_tensor, cams, targets, model)
        morf = self.morf_averager(input_tensor, cams, targets, model)
        return (lerf - morf) / 2
