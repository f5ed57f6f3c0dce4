"""EigenCAM: the first principal component of the activations (no gradient)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod

__all__ = ["EigenCAM"]


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


@METHODS.add
class EigenCAM(CamMethod, name="eigencam"):
    """EigenCAM (Muhammad & Yeasin, 2020, https://arxiv.org/abs/2008.00299).

    ``M = A_b`` as (h*w) x K, centered per channel; ``v1`` its first right singular vector;
    map ``= M v1`` reshaped to h x w.

    Deliberate difference from pytorch-grad-cam: the SVD sign is fixed so that the map correlates
    positively with the channel-mean activation map (the reference leaves it to LAPACK).
    """

    def raw_map(self, ctx: CamContext) -> Tensor:
        a = ctx.activations
        b, _, h, w = a.shape
        m = a.flatten(2).transpose(1, 2)  # B x hw x K
        m = m - m.mean(dim=1, keepdim=True)
        with _one_thread(m.device):
            _, _, vh = torch.linalg.svd(m, full_matrices=False)
        proj = (m @ vh[:, 0, :, None])[..., 0]  # B x hw
        corr = (proj * a.mean(dim=1).flatten(1)).sum(dim=1)
        sign = torch.where(corr < 0, -torch.ones_like(corr), torch.ones_like(corr))
        return (proj * sign[:, None]).view(b, h, w)
