"""CAM, the original class activation mapping: the classifier's weights as channel weights."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, as_given
from camwall.cams._outputs import class_logits
from camwall.cams._targets import ClassTarget
from camwall.errors import CamwallError

__all__ = ["CAM", "find_linear"]


def find_linear(model: nn.Module, name: str | None) -> tuple[str, nn.Linear]:
    """The classifier layer: ``name`` if given, else the last ``nn.Linear`` of ``model``."""
    model_name = type(model).__name__
    if name is not None:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise CamwallError(
                f"cam_fc_layer {name!r} is not a submodule of {model_name}."
            ) from None
        if not isinstance(layer, nn.Linear):
            raise CamwallError(
                f"cam_fc_layer {name!r} of {model_name} is a {type(layer).__name__}, not nn.Linear."
            )
        return name, layer
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise CamwallError(
            f"cam needs a model that ends in global average pooling + one nn.Linear; "
            f"{model_name} has no nn.Linear layer. Use gradcam (equal to CAM on such models)."
        )
    return found[-1]


@METHODS.add
class CAM(CamMethod, name="cam"):
    """CAM (Zhou et al., 2016, https://arxiv.org/abs/1512.04150).

    For a model whose logits are ``y = W mean_ij(A) + b`` (global average pooling of the target
    layer, then one ``nn.Linear``): ``w_bk = W[c_b, k]`` for the target class ``c_b``; map
    ``= sum_k w_bk A_bk``. The Linear is ``cam_fc_layer`` (a dotted name) or the model's last
    ``nn.Linear``; the structure is checked on the captured pass (the logits must equal
    ``W mean_ij(A) + b``), otherwise a CamwallError names the model and what is missing.
    Targets must be class indices. Same final map as gradcam on such models (``G = W / hw``).
    """

    default = False
    options: ClassVar[dict[str, Any]] = {"cam_fc_layer": None}
    checks: ClassVar[dict[str, Check]] = {"cam_fc_layer": as_given}  # a submodule name

    def weights(self, ctx: CamContext) -> Tensor:
        logits = class_logits(ctx.logits, "cam").float()
        model = ctx.runner.model
        fc_name, fc = find_linear(model, self.opts["cam_fc_layer"])
        a = ctx.activations
        w = fc.weight.detach().float()
        bias = None if fc.bias is None else fc.bias.detach().float()
        if w.shape[1] != a.shape[1]:
            raise CamwallError(
                f"cam needs global average pooling + one nn.Linear after the target layer; in "
                f"{type(model).__name__}, {fc_name!r} takes {w.shape[1]} features but target "
                f"layer {ctx.runner.layer_name!r} has {a.shape[1]} channels."
            )
        expected = torch.nn.functional.linear(a.mean(dim=(2, 3)), w, bias)
        if logits.shape != expected.shape or not torch.allclose(
            logits, expected, rtol=1e-3, atol=1e-4 * float(logits.abs().max()) + 1e-5
        ):
            raise CamwallError(
                f"cam needs a model that ends in global average pooling + one nn.Linear; the "
                f"logits of {type(model).__name__} are not {fc_name}(mean over space of "
                f"{ctx.runner.layer_name!r}). Choose the last feature layer or use gradcam."
            )
        classes = [t.index for t in ctx.targets if isinstance(t, ClassTarget)]
        if len(classes) != len(ctx.targets):
            raise CamwallError("cam needs class indices as targets (or None), not callables.")
        return w[torch.tensor(classes, device=w.device)]
