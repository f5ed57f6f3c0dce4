"""Attention rollout (Abnar & Zuidema, 2020, https://arxiv.org/abs/2005.00928) for ViTs.

With ``A_l`` the ``B x heads x N x N`` attention probabilities of layer ``l`` (rows sum to 1)::

    Ã_l = (mean_h A_l + I) / 2          # residual as identity; rows still sum to 1
    R   = Ã_L Ã_{L-1} ... Ã_1           # B x N x N
    map = R[:, 0, prefix:]              # class-token row over the patch tokens -> h x w grid

then the shared :func:`~camwall.cams.finalize_maps` (ReLU, min-max, bilinear resize, min-max).
The map does not depend on the target class (rollout is class-agnostic) nor on the target
layer. On a walled ViT a live row of ``A_l`` never points at a dead token and ``I`` adds only
the diagonal, so ``R[0, dead] = 0`` exactly: the token map is 0 on the dead zone.

The probabilities are captured by hooks registered for one forward pass and removed in
``finally``: on a :class:`~camwall.walls.WalledViT`, forward hooks on its ``MaskedSoftmax``
layers; on torchvision's ``VisionTransformer``, forward pre-hooks on each
``nn.MultiheadAttention`` that recompute ``softmax(q k^T / sqrt(d))`` from its input and its
``in_proj`` weights (torchvision asks it for no weights).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._post import finalize_maps
from camwall.errors import CamwallError

__all__ = ["Rollout", "attention_probabilities", "attention_rollout", "rollout_matrix"]


def _vit_layout(model: nn.Module) -> tuple[list[nn.Module], tuple[int, int]]:
    """The attention layers of ``model`` (in forward order) and its patch grid ``(h, w)``."""
    from camwall.walls import MaskedSoftmax, WalledViT

    if isinstance(model, WalledViT):
        return [m for m in model.modules() if isinstance(m, MaskedSoftmax)], model.grid
    from torchvision.models import VisionTransformer

    if isinstance(model, VisionTransformer):
        side = int(model.image_size // model.patch_size)
        kind = MaskedSoftmax if any(isinstance(m, MaskedSoftmax) for m in model.modules()) else None
        layers: list[nn.Module] = [  # walled (camwall.walls.wall_vit): its MaskedSoftmax layers
            m for m in model.encoder.modules() if isinstance(m, kind or nn.MultiheadAttention)
        ]
        return layers, (side, side)
    raise CamwallError(
        f"rollout needs a Vision Transformer: a camwall WalledViT (camwall.walls.walled_vit, "
        f"fashion-vit) or torchvision's VisionTransformer; got {type(model).__name__}. Use a "
        "gradient CAM method for other models."
    )


def _mha_probabilities(m: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d))`` of a batch-first self-attention input ``x`` (B x N x D):
    ``B x heads x N x N``, from ``m``'s packed ``in_proj`` weights."""
    if m.in_proj_weight is None or not m.batch_first:
        raise CamwallError(
            "rollout reads torchvision's ViT attention (packed in_proj, batch_first); this "
            "nn.MultiheadAttention is built otherwise."
        )
    b, n, d = x.shape
    q, k, _ = F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(b, n, m.num_heads, -1).transpose(1, 2)
    k = k.reshape(b, n, m.num_heads, -1).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / (d // m.num_heads) ** 0.5, dim=-1)


@contextmanager
def _captured(layers: Sequence[nn.Module], store: list[Tensor]) -> Iterator[None]:
    """Append each layer's ``B x heads x N x N`` attention probabilities to ``store``."""

    def on_output(module: nn.Module, inputs: Any, output: Tensor) -> None:
        store.append(output.detach().float())

    def on_input(module: nn.Module, args: Any, kwargs: Any) -> None:
        query = args[0] if args else kwargs["query"]
        assert isinstance(module, nn.MultiheadAttention)
        store.append(_mha_probabilities(module, query.detach()).float())

    handles = []
    try:
        for m in layers:
            if isinstance(m, nn.MultiheadAttention):
                handles.append(m.register_forward_pre_hook(on_input, with_kwargs=True))
            else:
                handles.append(m.register_forward_hook(on_output))
        yield
    finally:
        for h in handles:
            h.remove()


def attention_probabilities(model: nn.Module, x: Tensor) -> list[Tensor]:
    """One forward pass of ``model`` on ``x`` (no gradient); the attention probabilities of
    every layer in forward order, each ``B x heads x N x N`` float32."""
    layers, _ = _vit_layout(model)
    store: list[Tensor] = []
    with _captured(layers, store), torch.no_grad():
        model(x)
    if len(store) != len(layers):
        raise CamwallError(
            f"rollout captured {len(store)} attention maps for {len(layers)} attention layers; "
            "each layer must run once per forward pass."
        )
    return store


def rollout_matrix(attentions: Sequence[Tensor]) -> Tensor:
    """``R = Ã_L ... Ã_1`` with ``Ã_l = (mean_h A_l + I) / 2``, renormalized by rows.

    Args:
        attentions: per layer ``B x heads x N x N`` probabilities, in forward order.

    Returns:
        ``B x N x N`` float32.
    """
    if not attentions:
        raise CamwallError("rollout needs at least one attention layer.")
    n = attentions[0].shape[-1]
    eye = torch.eye(n, device=attentions[0].device)
    out: Tensor | None = None
    for a in attentions:
        mixed = a.float().mean(dim=1) + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        out = mixed if out is None else mixed @ out
    assert out is not None
    return out


def attention_rollout(model: nn.Module, x: Tensor) -> Tensor:
    """The class-token row of the rollout over the patch tokens, on the patch grid:
    ``B x h x w`` float32 (before any post-processing)."""
    _, (h, w) = _vit_layout(model)
    r = rollout_matrix(attention_probabilities(model, x))
    return r[:, 0, 1:].reshape(x.shape[0], h, w)


@METHODS.add
class Rollout(CamMethod, name="rollout"):
    """Attention rollout (Abnar & Zuidema, 2020): the class token's rolled-out attention over
    the patch tokens, ``finalize_maps(R[:, 0, 1:] on the h x w grid)``.

    Class-agnostic (targets are ignored) and independent of the target layer; runs one extra
    forward pass with the attention hooks. Only for a camwall ``WalledViT`` or torchvision's
    ``VisionTransformer`` (a CamwallError otherwise).
    """

    default = False

    def final_map(self, ctx: CamContext) -> Tensor:
        raw = attention_rollout(ctx.runner.model, ctx.x)
        return finalize_maps(raw, ctx.input_size)
