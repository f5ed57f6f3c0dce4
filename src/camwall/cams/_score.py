"""ScoreCAM: channel weights from the scores of activation-masked inputs (no gradient)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, positive_int
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
        chunk = self.opts["scorecam_chunk"]
        a = ctx.activations
        x = ctx.x
        b, k = a.shape[:2]
        size = ctx.input_size
        per_slot: list[Tensor] = []
        inverses: list[Tensor] = []
        jobs: list[tuple[int, int, int]] = []  # (image, slot, representative channel)
        zeros: list[tuple[int, int]] = []  # (image, slot) of the all-zero channels
        for i in range(b):
            uniq, inverse = torch.unique(a[i].flatten(1), dim=0, return_inverse=True)
            first = torch.full((uniq.shape[0],), k, dtype=torch.long, device=a.device)
            first = first.scatter_reduce(0, inverse, torch.arange(k, device=a.device), "amin")
            is_zero = (uniq == 0).all(dim=1)
            for slot, (ch, zero) in enumerate(zip(first.tolist(), is_zero.tolist())):
                if zero:
                    zeros.append((i, slot))
                else:
                    jobs.append((i, slot, ch))
            inverses.append(inverse)
            per_slot.append(torch.empty(uniq.shape[0], dtype=torch.float32, device=a.device))
        chunk_values: list[Tensor] = []
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            owners = [i for i, _, _ in part]
            maps = a[owners, [c for _, _, c in part]][:, None]  # n x 1 x h x w
            up = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
            flat = up.flatten(1)
            lo = flat.amin(dim=1)[:, None, None, None]
            hi = flat.amax(dim=1)[:, None, None, None]
            masks = (up - lo) / (hi - lo + 1e-8)
            masked = (x[owners].float() * masks).to(x.dtype)
            values = score_rows(ctx.runner.run_model(masked), owners, ctx.targets)
            chunk_values.append(values)
        if jobs:
            job_scores = torch.cat(chunk_values)
            slots = torch.tensor([slot for _, slot, _ in jobs], device=a.device)
            images = torch.tensor([i for i, _, _ in jobs], device=a.device)
            for i in range(b):
                mine = images == i
                per_slot[i][slots[mine]] = job_scores[mine]
        if zeros:
            # every all-zero mask gives the same all-zero input: one forward pass for the call
            logits = ctx.runner.run_model(torch.zeros_like(x[:1]))
            owners = [i for i, _ in zeros]
            values = score_rows(logits.expand(len(zeros), *logits.shape[1:]), owners, ctx.targets)
            for (i, slot), value in zip(zeros, values):  # at most one zero slot per image
                per_slot[i][slot] = value
        scores = torch.stack([per_slot[i][inverses[i]] for i in range(b)])
        return torch.softmax(scores, dim=1)
