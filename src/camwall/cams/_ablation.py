"""AblationCAM: channel weights from the score drop when a channel is ablated (no gradient)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, number, positive_int
from camwall.cams._targets import score_rows

__all__ = ["AblationCAM"]


@METHODS.add
class AblationCAM(CamMethod, name="ablationcam"):
    """Ablation-CAM (Desai & Ramaswamy, 2020, WACV).

    ``s0_b = y_b`` of the image; ``s_bk`` = the target score when channel k of A_b is set to
    ``ablation_value`` (default 0; in the layer's raw output when the ``reshape_transform`` has
    ``ablate``, e.g. :class:`camwall.cams.FpnGrid`); ``w_bk = (s0_b - s_bk) / s0_b``; map
    ``= sum_k w_bk A_bk``.

    Only the part of the model after the target layer is re-run, from the cached activations
    (the engine's ``head``, a Sequential split or a torch.fx split of the model's graph,
    :mod:`camwall.cams._tail`); where the graph cannot be cut the whole model is re-run with the
    layer's output replaced (the engine's ``info["tail"]`` says why). Ablated copies are
    processed in chunks of ``ablationcam_chunk`` (default 32), mixing images. Plain (not
    channels-last) inputs: grad-cam's maps to 1e-5 on random-weight ResNets.

    Deliberate difference from pytorch-grad-cam: it ablates layers with negative values to
    ``min - 1e7``; we always use ``ablation_value``. Results agree on non-negative layers.
    """

    options: ClassVar[dict[str, Any]] = {"ablationcam_chunk": 32, "ablation_value": 0.0}
    checks: ClassVar[dict[str, Check]] = {
        "ablationcam_chunk": positive_int,
        "ablation_value": number,
    }
    reruns_tail = True
    ablates = True
    # the score drops (s0 - s_k) / s0 amplify the ~1e-7 rounding of channels-last convolutions
    # (1.5e-5 on a random-weight resnet50 at layer3, 8e-7 on plain inputs): plain inputs
    channels_last_ok = False
    chunk_option = "ablationcam_chunk"
    chunk_budget = 2**21  # 512 rows of 64 x 64 grey canvases; the default on 224 x 224 RGB

    def weights(self, ctx: CamContext) -> Tensor:
        chunk = self.opts["ablationcam_chunk"]
        value = self.opts["ablation_value"]
        a = ctx.raw_activations
        b, k = a.shape[:2]
        total = b * k
        owners_all = torch.arange(b, device=a.device).repeat_interleave(k)
        chans_all = torch.arange(k, device=a.device).repeat(b)
        values: list[Tensor] = []
        for start in range(0, total, chunk):
            owners = owners_all[start : start + chunk]
            chans = chans_all[start : start + chunk]
            logits = ctx.run_ablated(owners, chans, value)
            values.append(score_rows(logits, owners.tolist(), ctx.targets))
        ablated = torch.cat(values).view(b, k)
        s0 = ctx.scores[:, None]
        return (s0 - ablated) / s0
