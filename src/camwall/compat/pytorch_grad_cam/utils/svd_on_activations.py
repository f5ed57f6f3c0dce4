"""Projections of activations on their first principal component (grad-cam's helpers).

For each image, ``M`` = the K x h x w activations as (h*w) x K rows, NaN set to 0 and each
channel centered; the projection is ``M v`` (h x w) with ``v`` the first right singular
vector (``np.linalg.svd``, as grad-cam, so the sign is LAPACK's) or, for the kernel version,
the first kernel principal component. The input array is never modified.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "get_2d_projection",
    "get_2d_projection_kernel",
    "get_2d_projection_with_sign_correction",
]


def _centered_rows(activations: np.ndarray) -> np.ndarray:
    """K x h x w -> (h*w) x K, NaN replaced by 0, each column centered (a new array)."""
    rows = np.nan_to_num(activations, nan=0.0, posinf=np.inf, neginf=-np.inf)
    rows = rows.reshape(rows.shape[0], -1).T
    return rows - rows.mean(axis=0)


def _project(activations: np.ndarray) -> np.ndarray:
    rows = _centered_rows(activations)
    _, _, vt = np.linalg.svd(rows, full_matrices=True)
    return (rows @ vt[0, :]).reshape(activations.shape[1:])


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """B x K x h x w -> B x h x w float32 first-principal-component maps."""
    return np.asarray([_project(a) for a in activation_batch], dtype=np.float32)


def get_2d_projection_with_sign_correction(activation_batch: np.ndarray) -> np.ndarray:
    """As :func:`get_2d_projection`, each map negated when ``|min| > |max|`` (Seg-Eigen-CAM,
    Chung & Ying 2025, Eq. 13)."""
    maps = []
    for a in activation_batch:
        p = _project(a)
        maps.append(-p if abs(p.min()) > abs(p.max()) else p)
    return np.asarray(maps, dtype=np.float32)


def _kernel(rows: np.ndarray, kernel: str, gamma: float | None) -> np.ndarray:
    """scikit-learn's pairwise kernels (``degree=3``, ``coef0=1``, ``gamma`` default 1/K)."""
    g = 1.0 / rows.shape[1] if gamma is None else gamma
    dots = rows @ rows.T
    if kernel == "linear":
        return dots
    if kernel == "poly":
        return (g * dots + 1) ** 3
    if kernel == "sigmoid":
        return np.tanh(g * dots + 1)
    if kernel == "rbf":
        sq = (rows**2).sum(axis=1)
        return np.exp(-g * np.maximum(sq[:, None] + sq[None, :] - 2 * dots, 0))
    if kernel == "cosine":
        norms = np.linalg.norm(rows, axis=1)
        norms[norms == 0] = 1
        return dots / norms[:, None] / norms[None, :]
    from camwall.errors import CamwallError

    raise CamwallError(
        f"get_2d_projection_kernel: kernel must be 'linear', 'poly', 'rbf', 'sigmoid' or "
        f"'cosine', got {kernel!r}."
    )


def _kernel_project(activations: np.ndarray, kernel: str, gamma: float | None) -> np.ndarray:
    """First kernel principal component ``sqrt(lambda_1) u_1`` of the centered kernel matrix
    (float64 ``eigh``), sign: largest-magnitude entry of ``u_1`` positive (scikit-learn)."""
    rows = _centered_rows(activations).astype(np.float64)
    k = _kernel(rows, kernel, gamma)
    n = k.shape[0]
    center = np.eye(n) - np.full((n, n), 1.0 / n)
    values, vectors = np.linalg.eigh(center @ k @ center)
    u = vectors[:, -1]
    u = u * np.sign(u[np.argmax(np.abs(u))])
    return (u * np.sqrt(max(values[-1], 0.0))).reshape(activations.shape[1:])


def get_2d_projection_kernel(
    activation_batch: np.ndarray, kernel: str = "sigmoid", gamma: float | None = None
) -> np.ndarray:
    """B x K x h x w -> B x h x w float32 first kernel-PCA component maps."""
    return np.asarray(
        [_kernel_project(a, kernel, gamma) for a in activation_batch], dtype=np.float32
    )
