"""ScoreCAM: channel weights from the scores of activation-masked inputs (no gradient)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, positive_int
from camwall.cams._outputs import repeat_rows
from camwall.cams._targets import score_rows

__all__ = ["ScoreCAM"]


@METHODS.add
class ScoreCAM(CamMethod, name="scorecam"):
    """Score-CAM (Wang et al., 2020, https://arxiv.org/abs/1910.01279).

    ``U = upsample(A)`` (bilinear, ``align_corners=True``) to H x W;
    ``mask_bk = (U_bk - min) / (max - min + 1e-8)``; ``s_bk = y_b(model(x_b * mask_bk))``;
    ``w_b = softmax_k(s_b)``; map ``= sum_k w_bk A_bk``.

    Identical channels give identical masks, so each distinct channel of an image is scored once;
    all-zero channels (dead ReLUs) all give the zero input, scored once per call. Masked inputs
    are forwarded in chunks of ``scorecam_chunk`` (default 16), mixing images.
    """

    options: ClassVar[dict[str, Any]] = {"scorecam_chunk": 16}
    checks: ClassVar[dict[str, Check]] = {"scorecam_chunk": positive_int}
    chunk_option = "scorecam_chunk"
    chunk_budget = 2**20  # 256 rows of 64 x 64 grey canvases; the default on 224 x 224 RGB

    def weights(self, ctx: CamContext) -> Tensor:
        a = ctx.activations
        b = a.shape[0]
        slots = _distinct_channels(a)
        if slots.jobs:
            job_scores = self._masked_scores(ctx, slots.jobs)
            where = torch.tensor([slot for _, slot, _ in slots.jobs], device=a.device)
            images = torch.tensor([i for i, _, _ in slots.jobs], device=a.device)
            for i in range(b):
                mine = images == i
                slots.scores[i][where[mine]] = job_scores[mine]
        if slots.zeros:
            # every all-zero mask gives the same all-zero input: one forward pass for the call
            logits = ctx.runner.run_model(torch.zeros_like(ctx.x[:1]))
            owners = [i for i, _ in slots.zeros]
            n = len(slots.zeros)
            values = score_rows(repeat_rows(logits, n), owners, ctx.targets)
            for (i, slot), value in zip(slots.zeros, values):  # at most one zero slot per image
                slots.scores[i][slot] = value
        scores = torch.stack([slots.scores[i][slots.inverses[i]] for i in range(b)])
        return torch.softmax(scores, dim=1)

    def _masked_scores(self, ctx: CamContext, jobs: list[tuple[int, int, int]]) -> Tensor:
        """``y_i(model(x_i * mask))`` for each ``(image i, slot, channel)`` job, in chunks."""
        chunk = self.opts["scorecam_chunk"]
        chunk_values: list[Tensor] = []
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            owners = [i for i, _, _ in part]
            masked = _masked_inputs(ctx, owners, [c for _, _, c in part])
            chunk_values.append(score_rows(ctx.runner.run_model(masked), owners, ctx.targets))
            del masked
        return torch.cat(chunk_values)


def _masked_inputs(ctx: CamContext, owners: list[int], channels: list[int]) -> Tensor:
    """``x_i * mask`` for each ``(owners[j], channels[j])`` (n x C x H x W): the channel map
    upsampled (bilinear, ``align_corners=True``) and min-max normalized. Its temporaries are
    freed before the forward pass that reads it."""
    maps = ctx.activations[owners, channels][:, None]  # n x 1 x h x w
    up = F.interpolate(maps, size=ctx.input_size, mode="bilinear", align_corners=True)
    flat = up.flatten(1)
    lo = flat.amin(dim=1)[:, None, None, None]
    hi = flat.amax(dim=1)[:, None, None, None]
    up.sub_(lo).div_(hi - lo + 1e-8)  # the masks, in place
    x = ctx.x
    masked = x[owners].float()  # a new tensor (the rows' copy): multiplied in place
    masked = masked.mul_(up) if masked.dtype == up.dtype else masked * up
    return masked.to(x.dtype)


@dataclass
class _Slots:
    """Each image's distinct channels: ``scores[i]`` (one per distinct channel, filled later),
    ``inverses[i]`` (channel -> slot), the jobs ``(image, slot, first channel)`` to score and
    the all-zero slots ``(image, slot)``."""

    scores: list[Tensor] = field(default_factory=list)
    inverses: list[Tensor] = field(default_factory=list)
    jobs: list[tuple[int, int, int]] = field(default_factory=list)
    zeros: list[tuple[int, int]] = field(default_factory=list)


def _distinct_channels(a: Tensor) -> _Slots:
    """Group identical channels of each image of ``a`` (B x K x h x w) into slots."""
    k = a.shape[1]
    out = _Slots()
    for i in range(a.shape[0]):
        uniq, inverse = torch.unique(a[i].flatten(1), dim=0, return_inverse=True)
        first = torch.full((uniq.shape[0],), k, dtype=torch.long, device=a.device)
        first = first.scatter_reduce(0, inverse, torch.arange(k, device=a.device), "amin")
        is_zero = (uniq == 0).all(dim=1)
        for slot, (ch, zero) in enumerate(zip(first.tolist(), is_zero.tolist())):
            if zero:
                out.zeros.append((i, slot))
            else:
                out.jobs.append((i, slot, ch))
        out.inverses.append(inverse)
        out.scores.append(torch.empty(uniq.shape[0], dtype=torch.float32, device=a.device))
    return out
