"""RefineCAM: the product over target layers of a base method's per-layer maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod, base_method_check
from camwall.cams._checks import Check, base_options
from camwall.cams._layers import method_map
from camwall.cams._post import normalize_maps

__all__ = ["RefineCAM"]


@METHODS.add
class RefineCAM(CamMethod, name="refinecam"):
    """RefineCAM (https://arxiv.org/abs/2605.14641), as pytorch-grad-cam 1.5.7's ``RefineCAM``.

    With target layers ``l = 1..L`` and ``M_l`` the base method's final map for layer ``l``
    alone (B x H x W in [0, 1]; ``refinecam_base``, default ``gradcampp``, with
    ``refinecam_base_options``): map ``= N(prod_l M_l)``, ``N`` the per-image min-max
    normalization ``(m - min) / (1e-7 + max(m - min))``. Multiplying the layers' maps keeps
    what every layer agrees on (it denoises early layers). ``eigen_smooth`` applies to each
    base map. All layers come from the engine's one pass; a gradient is always computed (the
    default base needs it). Plain (not channels-last) inputs, for bases that need them.
    """

    needs_gradient = True
    channels_last_ok = False
    default = False
    spans_layers = True
    options: ClassVar[dict[str, Any]] = {
        "refinecam_base": "gradcampp",
        "refinecam_base_options": None,
    }
    checks: ClassVar[dict[str, Check]] = {
        "refinecam_base": base_method_check(),
        "refinecam_base_options": base_options,
    }

    def layers_map(self, ctxs: Sequence[CamContext], eigen_smooth: bool = False) -> Tensor:
        base = METHODS.get(self.opts["refinecam_base"])(
            **(self.opts["refinecam_base_options"] or {})
        )
        maps = [method_map(base, [ctx], eigen_smooth).float() for ctx in ctxs]
        return normalize_maps(torch.stack(maps).prod(dim=0))
