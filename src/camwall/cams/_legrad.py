"""LeGrad (Bousselham et al., 2024, https://arxiv.org/abs/2404.03214) for Vision Transformers.

For every selected transformer block ``l`` (the last ``legrad_blocks`` blocks, default all),
with ``t_l`` its ``B x N x D`` output tokens and ``A_l`` its ``B x heads x N x N`` attention
probabilities::

    s_l  = target(head(norm(mean_n t_l)))          # the block's own class score, B
    G_l  = ReLU(ds_l / dA_l)                       # B x heads x N x N
    m_l  = mean_{heads, queries} G_l [:, prefix:]  # B x (h w) -> h x w patch grid
    map  = mean_l m_l

then the shared :func:`~camwall.cams.finalize_maps` (ReLU, min-max, bilinear resize,
min-max). ``head`` and ``norm`` are the model's own classifier and final LayerNorm; the
tokens are mean-pooled as in torchcam 0.5's ``LeGrad`` for torchvision's ViT, whose maps
these match (docs/cam-methods.md).

The gradient is exact and needs no replay of the attention: with ``o = out_proj(P V)`` the
attention output (``P = A_l`` per head, ``V`` the value projection of the block's attention
input) and ``g = ds_l / do``, the chain rule gives ``ds_l / dP = (g W_out)_h V_h^T`` per
head. On a walled attention (:class:`~camwall.walls.MaskedSoftmax`) a row never reads the
values its mask forbids (:meth:`~camwall.walls.MaskedSoftmax.read`), so ``ds_l / dP`` is 0
there: the product is multiplied by the mask.

The mean over tokens reads the dead tokens of a walled ViT too (the model's own head reads
the class token or the live tokens only), so LeGrad's score of an intermediate block can
depend on dead tokens: that is LeGrad's definition, kept here, and the bench measures it.

Hooks on the blocks and their attention modules live for one forward pass (removed in
``finally``). Supported: camwall's :class:`~camwall.walls.WalledViT` and torchvision's
``VisionTransformer``, walled (:func:`~camwall.walls.wall_vit`) or not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, positive_int
from camwall.cams._post import finalize_maps
from camwall.cams._targets import Target, score_rows
from camwall.errors import CamwallError

__all__ = ["LeGrad", "legrad_map"]


@dataclass(frozen=True)
class _Layout:
    """Where LeGrad reads a ViT: its blocks (forward order), their attention modules, the
    score projection ``tokens B x N x D -> B x classes``, the prefix tokens and the grid."""

    blocks: list[nn.Module]
    attentions: list[nn.Module]
    norm: nn.Module
    head: nn.Module
    prefix: int
    grid: tuple[int, int]

    def project(self, tokens: Tensor) -> Tensor:
        """``head(norm(mean_n tokens))``: B x classes."""
        return self.head(self.norm(tokens.mean(dim=1)))


def _layout(model: nn.Module) -> _Layout:
    """The :class:`_Layout` of a camwall ``WalledViT`` or a torchvision ``VisionTransformer``."""
    from torchvision.models import VisionTransformer

    from camwall.walls import WalledViT

    if isinstance(model, WalledViT):
        blocks = list(model.blocks)
        norm, head, grid = model.ln, model.head, model.grid
    elif isinstance(model, VisionTransformer):
        blocks = list(model.encoder.layers)
        side = int(model.image_size // model.patch_size)
        norm, head, grid = model.encoder.ln, model.heads, (side, side)
    else:
        raise CamwallError(
            f"legrad needs a Vision Transformer: a camwall WalledViT (camwall.walls.walled_vit, "
            f"fashion-vit) or torchvision's VisionTransformer (walled or not); got "
            f"{type(model).__name__}. Use a gradient CAM method for other models."
        )
    attentions = [b.get_submodule("self_attention") for b in blocks]
    for a in attentions:
        _value_projection(a)  # refuse an unknown attention module early
    return _Layout(blocks, attentions, norm, head, 1, grid)


def _value_projection(attn: nn.Module) -> tuple[Tensor, Tensor | None, int, Tensor | None]:
    """``(W_v D x D, b_v, heads, allowed N x N or None)`` of a packed self-attention."""
    from camwall.walls._vit import MaskedSelfAttention

    if isinstance(attn, MaskedSelfAttention):
        d = attn.qkv.weight.shape[1]
        bias = None if attn.qkv.bias is None else attn.qkv.bias[2 * d :]
        return attn.qkv.weight[2 * d :], bias, attn.heads, attn.attend.allowed
    if isinstance(attn, nn.MultiheadAttention) and attn.in_proj_weight is not None:
        d = attn.embed_dim
        bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * d :]
        return attn.in_proj_weight[2 * d :], bias, attn.num_heads, None
    raise CamwallError(
        f"legrad reads packed self-attention (torchvision's nn.MultiheadAttention with one "
        f"in_proj, or camwall's MaskedSelfAttention); got {type(attn).__name__}."
    )


@contextmanager
def _recorded(
    layout: _Layout, keep: set[int], store: dict[str, dict[int, Tensor]]
) -> Iterator[None]:
    """Record, for the blocks ``keep``, each block's output tokens (``store["tokens"]``) and its
    attention module's input and output (``"inputs"``, ``"outputs"``), graph kept."""

    def on_block(i: int, _m: nn.Module, _a: Any, out: Tensor) -> None:
        store["tokens"][i] = out

    def on_attention(i: int, _m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        store["inputs"][i] = args[0] if args else kwargs["query"]
        store["outputs"][i] = out[0] if isinstance(out, tuple) else out

    handles = []
    try:
        for i in sorted(keep):
            handles.append(layout.blocks[i].register_forward_hook(_bind(on_block, i)))
            handles.append(
                layout.attentions[i].register_forward_hook(_bind(on_attention, i), with_kwargs=True)
            )
        yield
    finally:
        for h in handles:
            h.remove()


def _bind(fn: Any, i: int) -> Any:
    return lambda *args: fn(i, *args)


def _attention_gradient(attn: nn.Module, x: Tensor, g: Tensor) -> Tensor:
    """``ds / dP`` (B x heads x N x N) from the attention input ``x`` and ``g = ds / do``
    (both B x N x D): ``(g W_out)_h V_h^T``, masked where the attention may not read."""
    w_v, b_v, heads, allowed = _value_projection(attn)
    b, n, d = x.shape
    out_proj = attn.out_proj
    assert isinstance(out_proj, nn.Linear)
    pre = (g @ out_proj.weight).reshape(b, n, heads, d // heads).transpose(1, 2)
    v = F.linear(x, w_v, b_v).reshape(b, n, heads, d // heads).transpose(1, 2)
    grad = pre @ v.transpose(-2, -1)
    return grad if allowed is None else grad * allowed


def _selected(count: int, blocks: int | None) -> set[int]:
    if blocks is not None and blocks > count:
        raise CamwallError(f"legrad_blocks={blocks}, but the model has only {count} blocks.")
    return set(range(count - (blocks or count), count))


def legrad_map(
    model: nn.Module, x: Tensor, targets: Sequence[Target], blocks: int | None = None
) -> Tensor:
    """LeGrad's map before post-processing (module docstring): ``B x h x w`` float32.

    Args:
        model: a ``WalledViT`` or torchvision ``VisionTransformer``, in eval mode.
        x: ``B x C x H x W`` inputs.
        targets: one callable per image on a row of logits (e.g. ``ClassTarget(k)``).
        blocks: average over the last ``blocks`` blocks (None: all of them).
    """
    layout = _layout(model)
    keep = _selected(len(layout.blocks), blocks)
    store: dict[str, dict[int, Tensor]] = {"tokens": {}, "inputs": {}, "outputs": {}}
    owners = list(range(x.shape[0]))
    with torch.enable_grad():
        with _recorded(layout, keep, store):
            model(x.detach().clone().requires_grad_(True))
        if len(store["tokens"]) != len(keep) or len(store["outputs"]) != len(keep):
            raise CamwallError("legrad: a selected block did not run in the forward pass.")
        maps = []
        for i in sorted(keep):
            score = score_rows(layout.project(store["tokens"][i]), owners, targets).sum()
            (g,) = torch.autograd.grad(score, store["outputs"][i], retain_graph=True)
            with torch.no_grad():
                grad = _attention_gradient(layout.attentions[i], store["inputs"][i], g)
                maps.append(grad.relu().mean(dim=(1, 2))[:, layout.prefix :].float())
    h, w = layout.grid
    return torch.stack(maps).mean(dim=0).reshape(x.shape[0], h, w)


def _blocks_option(name: str, value: Any) -> int | None:
    """None (every block) or a positive int."""
    return None if value is None else positive_int(name, value)


@METHODS.add
class LeGrad(CamMethod, name="legrad"):
    """LeGrad (Bousselham et al., 2024): the positive gradients of each block's own class score
    with respect to its attention probabilities, averaged over heads, queries and blocks
    (:func:`legrad_map`), then ``finalize_maps``.

    Independent of the target layer; option ``legrad_blocks`` (None: all blocks, else the
    last N). Only for a camwall ``WalledViT`` or torchvision's ``VisionTransformer``.
    """

    default = False
    options: ClassVar[dict[str, Any]] = {"legrad_blocks": None}
    checks: ClassVar[dict[str, Check]] = {"legrad_blocks": _blocks_option}

    def final_map(self, ctx: CamContext) -> Tensor:
        raw = legrad_map(ctx.runner.model, ctx.x, ctx.targets, self.opts["legrad_blocks"])
        return finalize_maps(raw, ctx.input_size)
