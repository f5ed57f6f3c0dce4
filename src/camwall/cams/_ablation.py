"""AblationCAM: channel weights from the score drop when a channel is ablated (no gradient)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._score import chunk_option
from camwall.cams._targets import score_rows
from camwall.errors import CamwallError

__all__ = ["AblationCAM"]


@METHODS.add
class AblationCAM(CamMethod, name="ablationcam"):
    """Ablation-CAM (Desai & Ramaswamy, 2020, WACV).

    ``s0_b = y_b`` of the image; ``s_bk`` = the target score when channel k of A_b is set to
    ``ablation_value`` (default 0); ``w_bk = (s0_b - s_bk) / s0_b``; map ``= sum_k w_bk A_bk``.

    Only the part of the model after the target layer is re-run, from the cached activations
    (a Sequential split or the engine's ``head``); otherwise the whole model is re-run with the
    layer's output replaced. Ablated copies are processed in chunks of ``ablationcam_chunk``
    (default 32), mixing images.

    Deliberate difference from pytorch-grad-cam: it ablates layers with negative values to
    ``min - 1e7``; we always use ``ablation_value``. Results agree on non-negative layers.
    """

    options: ClassVar[dict[str, Any]] = {"ablationcam_chunk": 32, "ablation_value": 0.0}
    reruns_tail = True

    def weights(self, ctx: CamContext) -> Tensor:
        chunk = chunk_option(self.opts["ablationcam_chunk"], "ablationcam_chunk")
        value = self.opts["ablation_value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CamwallError(f"option ablation_value must be a number, got {value!r}.")
        a = ctx.raw_activations
        b, k = a.shape[:2]
        total = b * k
        owners_all = torch.arange(b, device=a.device).repeat_interleave(k)
        chans_all = torch.arange(k, device=a.device).repeat(b)
        values: list[Tensor] = []
        for start in range(0, total, chunk):
            owners = owners_all[start : start + chunk]
            chans = chans_all[start : start + chunk]
            batch = a[owners].clone()
            batch[torch.arange(len(owners), device=a.device), chans] = value
            logits = ctx.run_tail(batch, owners)
            values.append(score_rows(logits, owners.tolist(), ctx.targets))
        ablated = torch.cat(values).view(b, k)
        s0 = ctx.scores[:, None]
        return (s0 - ablated) / s0
