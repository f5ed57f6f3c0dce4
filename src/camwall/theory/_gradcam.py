"""GradCAM of the simple CNN: Proposition 2's closed form, and the autograd reference.

GradCAM here is taken at the activation maps ``B_v = ReLU(A_v)`` (``h x w``), before any
upsampling or normalization::

    alpha_v = (1 / (h w)) * sum_{i,j} (dy / dB_v)[i, j]        GC = ReLU(sum_v alpha_v B_v)

Proposition 2: max-pool routes each pooled gradient to exactly one position of its 2x2 window, so
``alpha_v = (1 / (h w)) * sum_{p,q} (dy / dM_v)[p, q]`` with
``dy/dvec(M) = W_1^T D_1 W_2^T D_2 ... W_L^T e_target``, ``D_l = diag(1[z_l > 0])``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.errors import CamwallError
from camwall.theory._model import SimpleCNN

__all__ = ["GradCAMResult", "as_batch", "gradcam_autograd", "gradcam_closed_form"]


class GradCAMResult(NamedTuple):
    """GradCAM of the simple CNN.

    Attributes:
        alpha: coefficients ``alpha_v``, ``N x V`` (``V`` for an unbatched image).
        cam: the map ``ReLU(sum_v alpha_v B_v)``, ``N x h x w`` (``h x w`` unbatched).
        target: output index explained, int64 ``N`` (scalar unbatched).
    """

    alpha: Tensor
    cam: Tensor
    target: Tensor


def as_batch(image: Tensor, channels: int = 1) -> tuple[Tensor, bool]:
    """Return ``image`` as ``N x C x H x W`` and whether it was batched.

    Accepts ``H x W``, ``C x H x W`` or ``N x C x H x W``.

    Raises:
        CamwallError: on another number of dimensions, a channel mismatch or non-finite values.
    """
    if not isinstance(image, Tensor):
        raise CamwallError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 2:
        x, batched = image[None, None], False
    elif image.dim() == 3:
        x, batched = image[None], False
    elif image.dim() == 4:
        x, batched = image, True
    else:
        raise CamwallError(
            f"image has shape {tuple(image.shape)}; expected H x W, C x H x W or N x C x H x W"
        )
    if x.shape[1] != channels:
        raise CamwallError(f"image has {x.shape[1]} channels; the model expects {channels}")
    if not torch.isfinite(x).all():
        raise CamwallError("image contains NaN or infinite values")
    return x, batched


def _targets(logits: Tensor, target: int | Tensor | None) -> Tensor:
    n, outputs = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1).expand(n)
    if bool(((t < 0) | (t >= outputs)).any()):
        raise CamwallError(f"target {target} is out of range for {outputs} outputs")
    return t.clone()


def _check_input(model: SimpleCNN, x: Tensor) -> None:
    if tuple(x.shape[-2:]) != model.input_size:
        raise CamwallError(
            f"image is {x.shape[-2]}x{x.shape[-1]}; the model was built for "
            f"{model.input_size[0]}x{model.input_size[1]}"
        )


def _finish(alpha: Tensor, b: Tensor, target: Tensor, batched: bool) -> GradCAMResult:
    cam = torch.relu(torch.einsum("nv,nvij->nij", alpha, b))
    if batched:
        return GradCAMResult(alpha, cam, target)
    return GradCAMResult(alpha[0], cam[0], target[0])


@torch.no_grad()
def gradcam_closed_form(
    model: SimpleCNN, image: Tensor, target: int | Tensor | None = None
) -> GradCAMResult:
    """GradCAM by Proposition 2, from the weights alone: no autograd.

    The hidden pre-activations ``z_l`` and the backward product are explicit matrix products::

        z_1 = W_1 vec(M),  z_l = W_l ReLU(z_{l-1});   g^T = e_t^T W_L D_{L-1} W_{L-1} ... D_1 W_1
        alpha_v = (1 / (h w)) * sum_{p,q} g[v, p, q]

    Args:
        model: a :class:`SimpleCNN` (any ``L``, walled or not).
        image: ``H x W``, ``C x H x W`` or ``N x C x H x W``, same dtype and device as ``model``.
        target: output index to explain; ``None`` takes the argmax of the outputs.

    Returns:
        :class:`GradCAMResult` with ``alpha`` (``N x V``) and ``cam`` (``N x h x w``).
    """
    x, batched = as_batch(image, model.conv.in_channels)
    _check_input(model, x)
    b = torch.relu(F.conv2d(x, model.conv.weight))  # N x V x h x w
    m = F.max_pool2d(b, 2).flatten(1)  # N x (V h' w')
    weights = model.head_weights()
    pre: list[Tensor] = []  # hidden pre-activations z_1 .. z_{L-1}
    act = m
    for weight in weights[:-1]:
        z = act @ weight.T
        pre.append(z)
        act = torch.relu(z)
    logits = act @ weights[-1].T
    t = _targets(logits, target)
    g = weights[-1][t]  # N x d_{L-1}: the rows e_t^T W_L
    for weight, z in zip(reversed(weights[:-1]), reversed(pre)):
        g = (g * (z > 0).to(g.dtype)) @ weight  # D_l, then W_l
    h, w = model.activation_size
    hp, wp = model.pooled_size
    alpha = g.reshape(-1, model.filters, hp, wp).sum(dim=(2, 3)) / (h * w)
    return _finish(alpha, b, t, batched)


def gradcam_autograd(
    model: SimpleCNN, image: Tensor, target: int | Tensor | None = None
) -> GradCAMResult:
    """GradCAM by autograd: ``alpha_v = GAP(dy / dB_v)`` at the ReLU after the convolution.

    This is the definition that :func:`gradcam_closed_form` is checked against, and the GradCAM
    of the at-initialization experiment. Same arguments and result as the closed form.
    """
    x, batched = as_batch(image, model.conv.in_channels)
    _check_input(model, x)
    with torch.enable_grad():
        b = model.activations(x).detach().requires_grad_(True)
        logits = model.head_forward(b)
        t = _targets(logits.detach(), target)
        (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), b)
    alpha = grad.mean(dim=(2, 3))
    return _finish(alpha, b.detach(), t, batched)
