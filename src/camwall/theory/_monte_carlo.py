"""Monte Carlo estimate of the expected GradCAM map over fresh Gaussian initializations.

Each sample is a new walled simple CNN with ``L = 1``: filters ``C_v`` and the unmasked head
weights ``W_v[p, q]`` i.i.d. ``N(0, tau^2)``. For ``L = 1`` Proposition 2 is exact, so
``alpha_v = (1/(h w)) sum_{unmasked p,q} W_v[p, q]`` needs no autograd (checked against autograd
in the tests). Many initializations are batched in one matrix product::

    P = unfold(image)                  k^2 x (h w)          the patches m_ij as columns
    B = ReLU(C P)                      (S V) x (h w)        all samples' activation maps
    GC = ReLU(alpha^T B)               S x (h w)            one batched product per sample block

Everything is float64 on ``image.device``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from camwall.errors import CamwallError
from camwall.theory._expectation import _check_tau, _check_v, _image2d
from camwall.theory._model import conv_output_size, default_wall_rows

__all__ = ["HeadSampling", "MonteCarloResult", "monte_carlo_gradcam"]

HeadSampling = Literal["weights", "alpha"]


class MonteCarloResult(NamedTuple):
    """Mean GradCAM map over the samples and its standard error, both ``h x w`` float64."""

    mean: Tensor
    stderr: Tensor


def _image_patches(image: Tensor, kernel_size: int) -> Tensor:
    """``k^2 x (h w)`` float64: column ``i w + j`` is the flattened patch ``m_ij``."""
    x = image.to(torch.float64)[None, None]
    return F.unfold(x, kernel_size)[0]


def _sample_weights(
    count: int,
    filters: int,
    kernel_size: int,
    live_rows: int,
    pooled_width: int,
    tau: float,
    generator: torch.Generator | None,
    device: torch.device,
    head_sampling: HeadSampling = "weights",
) -> tuple[Tensor, Tensor]:
    """Draw ``count`` initializations, float64.

    Returns:
        filters ``S x V x k x k`` and the live head weights ``S x V x live_rows x w'`` (the
        walled weights are zero and not drawn). With ``head_sampling="alpha"`` the head is
        ``S x V x 1 x 1``: each filter's sum of unmasked weights, drawn from its exact law
        ``N(0, n_u tau^2)`` (``n_u = live_rows * w'``).
    """
    gen_device = generator.device if generator is not None else device
    conv = torch.randn(
        count, filters, kernel_size, kernel_size,
        generator=generator, dtype=torch.float64, device=gen_device,
    )  # fmt: skip
    if head_sampling == "alpha":
        head_shape, head_std = (count, filters, 1, 1), tau * math.sqrt(live_rows * pooled_width)
    else:
        head_shape, head_std = (count, filters, live_rows, pooled_width), tau
    head = torch.randn(head_shape, generator=generator, dtype=torch.float64, device=gen_device)
    return (conv * tau).to(device), (head * head_std).to(device)


def _gradcam_samples(
    patches: Tensor, conv: Tensor, head: Tensor, activation_size: tuple[int, int]
) -> Tensor:
    """GradCAM maps ``S x (h w)`` of the sampled walled CNNs (``L = 1``, closed-form alpha)."""
    count, filters = conv.shape[:2]
    h, w = activation_size
    alpha = head.sum(dim=(2, 3)) / (h * w)  # S x V
    b = (conv.reshape(count * filters, -1) @ patches).relu_()  # (S V) x (h w)
    gc = torch.bmm(alpha[:, None, :], b.reshape(count, filters, -1))[:, 0]
    return gc.relu_()


class _Plan(NamedTuple):
    """What one Monte Carlo run draws: sizes, live pooled rows and the block size."""

    image: Tensor
    activation_size: tuple[int, int]
    pooled_width: int
    live_rows: int
    batch_size: int


def _plan(
    image: Tensor,
    filters: int,
    kernel_size: int,
    tau: float,
    samples: int,
    batch_size: int | None,
    wall_rows: Sequence[int] | None,
    head_sampling: str,
) -> _Plan:
    """Check the arguments of :func:`monte_carlo_gradcam` and size the run."""
    _check_v(filters)
    _check_tau(tau)
    if samples < 2:
        raise CamwallError(f"samples={samples}: need at least 2 for a standard error")
    x = _image2d(image)
    h, w, hp, wp = conv_output_size((int(x.shape[0]), int(x.shape[1])), kernel_size)
    rows = default_wall_rows(hp) if wall_rows is None else tuple(wall_rows)
    if any(not 0 <= p < hp for p in rows):
        raise CamwallError(f"wall_rows {tuple(rows)} are outside the {hp} pooled rows")
    if head_sampling not in ("weights", "alpha"):
        raise CamwallError(f"head_sampling={head_sampling!r}; choose 'weights' or 'alpha'")
    if batch_size is None:
        batch_size = max(1, (2 << 20) // (filters * h * w))
    if batch_size < 1:
        raise CamwallError(f"batch_size={batch_size} must be >= 1")
    return _Plan(x, (h, w), wp, hp - len(set(rows)), batch_size)


class _RunningMoments:
    """Mean and sum of squared deviations of ``S x n`` blocks, merged block by block (Chan et
    al.): ``mean += delta * m / (n + m)``, ``M2 += M2_block + delta^2 * n m / (n + m)``."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.mean = torch.zeros(size, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)
        self.count = 0

    def add(self, block: Tensor) -> None:
        """Merge the rows of ``block`` (``m x size``)."""
        count = block.shape[0]
        block_mean = block.mean(dim=0)
        block_m2 = ((block - block_mean) ** 2).sum(dim=0)
        delta = block_mean - self.mean
        total = self.count + count
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + block_m2 + delta**2 * (self.count * count / total)
        self.count = total

    def stderr(self) -> Tensor:
        """Standard error of the mean, ``sqrt(M2 / (n - 1) / n)``."""
        return (self.m2 / (self.count - 1) / self.count).sqrt()


def monte_carlo_gradcam(
    image: Tensor,
    filters: int,
    kernel_size: int,
    tau: float = 1.0,
    samples: int = 2000,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    *,
    wall_rows: Sequence[int] | None = None,
    head_sampling: HeadSampling = "weights",
    progress: bool = False,
) -> MonteCarloResult:
    """Average GradCAM over ``samples`` fresh initializations of the walled simple CNN (``L=1``).

    Args:
        image: ``H x W`` (or ``1 x H x W``) grayscale image; the work runs on its device.
        filters: ``V``.
        kernel_size: ``k``.
        tau: standard deviation of the weights.
        samples: number of initializations ``S`` (at least 2).
        generator: source of randomness (on the CPU or on ``image.device``); ``None`` uses
            torch's global generator.
        batch_size: initializations per matrix product; default keeps each block of
            activation maps near 2 M float64 values (16 MB).
        wall_rows: walled pooled rows; default the paper's bottom half.
        head_sampling: ``"weights"`` draws every unmasked head weight (the model as defined);
            ``"alpha"`` draws each filter's sum of unmasked weights from its exact law
            ``N(0, n_u tau^2)``: the same distribution of ``alpha``, with ``h'w'/2`` times
            fewer normal draws for the head.
        progress: show a tqdm progress bar.

    Returns:
        :class:`MonteCarloResult`: ``mean`` and ``stderr`` (standard error of the mean), each
        ``h x w`` float64 on ``image.device``.
    """
    plan = _plan(
        image, filters, kernel_size, tau, samples, batch_size, wall_rows, head_sampling
    )  # fmt: skip
    x, (h, w) = plan.image, plan.activation_size
    patches = _image_patches(x, kernel_size)
    moments = _RunningMoments(h * w, x.device)
    with tqdm(total=samples, disable=not progress, desc="Monte Carlo", unit="init") as bar:
        while moments.count < samples:
            count = min(plan.batch_size, samples - moments.count)
            conv, head = _sample_weights(
                count, filters, kernel_size, plan.live_rows, plan.pooled_width, tau, generator,
                x.device, head_sampling,
            )  # fmt: skip
            moments.add(_gradcam_samples(patches, conv, head, (h, w)))
            bar.update(count)
    return MonteCarloResult(moments.mean.reshape(h, w), moments.stderr().reshape(h, w))
