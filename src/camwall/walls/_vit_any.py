"""Walls for any Vision Transformer: torchvision's and timm's ``VisionTransformer``, in place.

:func:`wall_vit` turns a plain ViT into a walled one with the walled fashion-vit's mechanism
(:class:`~camwall.walls.MaskedSoftmax` and its :meth:`~camwall.walls.MaskedSoftmax.read`):
for a set of dead patches on the ``h x w`` patch grid (a :class:`~camwall.walls.WallSpec`),
with ``P`` prefix tokens (class, register, distillation) before the ``h w`` patch tokens,

* every attention layer gets the structural mask ``allowed[i, j] = dead_i or not dead_j``
  (``N x N``, ``N = P + h w``; prefix tokens are live): live, class and register tokens
  attend only to live tokens (their scores of dead tokens are ``-inf`` before the softmax)
  and never read a dead token's value (it is set to 0 before ``p v``), so a dead input of
  ``1e30`` or the float32 maximum (an inf or NaN dead token) cannot reach them;
* the head reads live tokens only: the class token (``x[:, 0]``), or, for an averaging head
  (timm ``global_pool="avg"``, ``"max"``, ``"avgmax"``), the pool over the live tokens only
  (:class:`LiveTokenPool`).

Everything else (patch embedding, LayerNorm, MLP, residual adds) is per token, so the dead
patches' pixels cannot change the logits. The model keeps its class and every state-dict key
(a plain torchvision or timm state dict loads into it unchanged): the attention modules are
replaced by masked ones holding the same parameters under the same names (the mask is
derived from the recorded wall, not saved), and the containers that own the class, register
and position tokens list them in ``camwall_constants`` for :func:`~camwall.walls.dead_zone`.

Swin transformers (V1) are walled by :func:`~camwall.walls.wall_swin` (``wall_vit``
dispatches to it) where the region is aligned to their coarsest grid: their window attention
is masked per (shifted) window. Other windowed transformers are refused with the reason
(:func:`refuse_windowed`): MaxViT (grid attention and squeeze-excitation read the whole
image) and windowed transformers camwall does not know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.tokens import token_grid
from camwall.walls._info import declare, describe
from camwall.walls._spec import WallSpec
from camwall.walls._vit import MaskedSelfAttention, MaskedSoftmax

__all__ = [
    "LiveTokenPool",
    "TimmMaskedAttention",
    "TorchvisionMaskedAttention",
    "describe_vit",
    "is_vision_transformer",
    "refuse_windowed",
    "token_mask",
    "vit_grid",
    "vit_input_shape",
    "wall_named_vit",
    "wall_vit",
]

#: Class names of windowed / patch-merging transformers (torchvision and timm).
_WINDOWED = ("Swin", "MaxVit", "MaxxVit")

#: The own parameters of a ViT container that its forward only concatenates to or adds to
#: the tokens (torchvision: class token, position embedding; timm: class, register and
#: distillation tokens, position embedding).
_TOKEN_CONSTANTS = frozenset(
    {"class_token", "pos_embedding", "cls_token", "reg_token", "dist_token", "pos_embed"}
)


def token_mask(dead: Tensor, prefix: int) -> Tensor:
    """The walled attention mask: bool ``N x N`` (``N = prefix + h w``) for a bool ``[h, w]``
    ``dead`` patch grid; tokens ``0 .. prefix-1`` are the (live) prefix tokens, token
    ``prefix + r w + c`` is patch ``(r, c)``. ``allowed[i, j] = dead_i or not dead_j``."""
    dead_tok = torch.cat([torch.zeros(prefix, dtype=torch.bool), dead.flatten().cpu()])
    return dead_tok[:, None] | ~dead_tok[None, :]


def _masked_softmax(allowed: Tensor) -> MaskedSoftmax:
    """A :class:`MaskedSoftmax` whose mask is not saved (it is the recorded wall's), so that
    the state dict keeps the unwalled network's keys."""
    attend = MaskedSoftmax(allowed)
    attend.register_buffer("allowed", attend.allowed, persistent=False)
    return attend


class TorchvisionMaskedAttention(MaskedSelfAttention):
    """torchvision's ``EncoderBlock.self_attention`` (``nn.MultiheadAttention``,
    ``batch_first``) with the structural mask: ``(x, x, x) -> (out_proj(p v), None)`` as
    :class:`~camwall.walls._vit.MaskedSelfAttention` computes it.

    The parameters are the original module's (``in_proj_weight`` / ``in_proj_bias`` become
    ``qkv.weight`` / ``qkv.bias``, the same tensors); the state dict uses torchvision's names
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``) in both directions.
    """

    def __init__(self, mha: nn.MultiheadAttention, allowed: Tensor) -> None:
        if (
            not mha.batch_first
            or not mha._qkv_same_embed_dim
            or mha.in_proj_bias is None
            or mha.bias_k is not None
            or mha.add_zero_attn
            or mha.dropout > 0
        ):
            raise CamwallError(
                "wall_vit: this torchvision attention layer is not the standard one (batch "
                "first, one in_proj with bias, no bias_k / zero attention, attention_dropout "
                "0); build the ViT with torchvision's defaults."
            )
        super().__init__(mha.embed_dim, mha.num_heads, allowed)
        self.qkv.weight = mha.in_proj_weight
        self.qkv.bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self.attend = _masked_softmax(allowed)
        self.register_state_dict_post_hook(_torchvision_names)
        self.register_load_state_dict_pre_hook(_camwall_names)

    def forward(  # type: ignore[override]
        self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False, **kw: Any
    ) -> tuple[Tensor, None]:
        if key is not query or value is not query or need_weights or any(kw.values()):
            raise CamwallError(
                "a walled ViT's attention is self-attention with its own structural mask: "
                "call it as attn(x, x, x, need_weights=False), without masks."
            )
        return super().forward(query), None


_RENAMES = (("qkv.weight", "in_proj_weight"), ("qkv.bias", "in_proj_bias"))


def _torchvision_names(module: nn.Module, state: dict[str, Any], prefix: str, meta: Any) -> None:
    for ours, theirs in _RENAMES:
        if prefix + ours in state:
            state[prefix + theirs] = state.pop(prefix + ours)


def _camwall_names(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    for ours, theirs in _RENAMES:
        if prefix + theirs in state:
            state[prefix + ours] = state.pop(prefix + theirs)


class TimmMaskedAttention(nn.Module):
    """timm's ``Attention`` with the structural mask; the same submodules (``qkv``,
    ``q_norm``, ``k_norm``, ``attn_drop``, ``norm``, ``gate``, ``proj``, ``proj_drop``) and so
    the same state-dict keys, plus ``attend`` (:class:`MaskedSoftmax`, mask not saved).

    ``q, k, v = split(qkv(x))`` (``B x heads x N x d``), ``q, k = q_norm(q), k_norm(k)``,
    ``p = attn_drop(attend(scale q k^T))``, ``x = norm(read(p, v))`` (heads merged; each row
    reads only the values its mask allows), ``x = x * sigmoid(gate(x_in))`` when gated, then
    ``proj_drop(proj(x))``.
    """

    def __init__(self, attn: Any, allowed: Tensor) -> None:
        super().__init__()
        self.num_heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.attn_dim = int(attn.attn_dim)
        self.scale = float(attn.scale)
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attend = _masked_softmax(allowed)
        self.attn_drop = attn.attn_drop
        self.norm = attn.norm
        self.gate = attn.gate
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        if attn_mask is not None or is_causal:
            raise CamwallError(
                "a walled ViT's attention has its own structural mask; run the model without "
                "attn_mask / is_causal."
            )
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        p = self.attn_drop(self.attend(torch.matmul(q * self.scale, k.transpose(-2, -1))))
        x = self.norm(self.attend.read(p, v).transpose(1, 2).reshape(b, n, self.attn_dim))
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class LiveTokenPool(nn.Module):
    """An averaging head over the live tokens only: ``B x T x D -> B x D``.

    ``kind`` ``"avg"``: the mean of the tokens ``index`` (the live ones); ``"max"``: their
    channel-wise maximum; ``"avgmax"``: half the sum of both. A dead token is never read.
    Structurally (:func:`~camwall.walls.dead_zone`): the mean of the live tokens.
    """

    index: Tensor

    def __init__(self, live: Tensor, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("index", torch.nonzero(live).flatten(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        live = x.index_select(1, self.index)
        if self.kind == "avg":
            return live.mean(1)
        if self.kind == "max":
            return live.amax(1)
        return 0.5 * (live.amax(1) + live.mean(1))

    def camwall_structural(self, x: Tensor) -> Tensor:
        """Every output channel reads that channel of every live token."""
        return x.index_select(1, self.index).mean(1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, live_tokens={self.index.numel()}"


def is_vision_transformer(model: nn.Module) -> bool:
    """True for torchvision's and timm's ``VisionTransformer`` (and timm subclasses)."""
    return _library(model) is not None


def _library(model: nn.Module) -> str | None:
    for cls in type(model).__mro__:
        if cls.__name__ == "VisionTransformer":
            if cls.__module__ == "torchvision.models.vision_transformer":
                return "torchvision"
            if cls.__module__ == "timm.models.vision_transformer":
                return "timm"
    return None


def refuse_windowed(model: nn.Module, where: str) -> None:
    """A one-line :class:`CamwallError` for a windowed transformer that cannot be walled
    (a Swin is walled by :func:`~camwall.walls.wall_swin` instead): MaxViT, other windowed or
    patch-merging transformers."""
    name = type(model).__name__
    if "MaxVit" in name or "MaxxVit" in name:
        raise CamwallError(
            f"{where}: {name} cannot be walled: besides window attention it has grid "
            "attention (each token attends to tokens spread over the whole image) and "
            "MBConv blocks whose squeeze-excitation pools the whole image, so no region keeps "
            "a dead zone; use a ViT, a Swin (swin_t, swin_v2_t, timm swin_* / swinv2_*) or a CNN."
        )
    if any(w in name for w in _WINDOWED):
        raise CamwallError(
            f"{where}: {name} is a windowed transformer with patch merging that camwall does "
            "not know; Swin V1 and V2 (torchvision swin_t / swin_v2_t ..., timm swin_* / "
            "swinv2_*) and plain ViTs are walled, other windowed transformers cannot be."
        )


def vit_grid(model: Any) -> tuple[tuple[int, int, int], int, int]:
    """``((C, H, W), h, w)``: the input shape and the ``h x w`` patch grid of a torchvision or
    timm ViT (``H = h P``, ``W = w P`` for ``P x P`` patches)."""
    if _library(model) == "torchvision":
        size = int(model.image_size)
        side = size // int(model.patch_size)
        return (_first_conv(model.conv_proj).in_channels, size, size), side, side
    embed = model.patch_embed
    if getattr(embed, "img_size", None) is None or getattr(model, "dynamic_img_size", False):
        raise CamwallError(
            "wall_vit: a timm ViT with a dynamic image size has no fixed patch grid to wall; "
            "build it with dynamic_img_size=False."
        )
    h, w = (int(v) for v in embed.grid_size)
    shape = (_first_conv(embed.proj).in_channels, int(embed.img_size[0]), int(embed.img_size[1]))
    return shape, h, w


def _first_conv(module: nn.Module) -> nn.Conv2d:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise CamwallError("wall_vit: the patch embedding has no Conv2d; it is not a plain ViT.")


def _dead_grid(
    spec: WallSpec | Mapping[str, Any] | str, h: int, w: int, where: str = "wall_vit"
) -> tuple[WallSpec, Tensor]:
    from camwall.walls._parse import parse_wall

    if isinstance(spec, Mapping):
        spec = WallSpec.from_dict(spec)
    elif isinstance(spec, str):
        spec = parse_wall(f"patches:{spec}")[1]
    if not isinstance(spec, WallSpec):
        raise CamwallError(
            f"{where}: spec {spec!r} is not a WallSpec (over the patch grid), a "
            "{'rows', 'cols'} dict or a region string such as 'rows=10:'."
        )
    dead = spec.blocked(h, w)
    if bool(dead.all()):
        raise CamwallError(
            f"{where}: the wall {spec.describe()} covers the whole {h} x {w} patch grid; leave "
            "at least one live patch."
        )
    return spec, dead


def wall_vit(
    model: nn.Module,
    spec: WallSpec | Mapping[str, Any] | str,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Wall a torchvision or timm Vision Transformer in place (see the module docstring); a
    Swin transformer (V1) goes to :func:`~camwall.walls.wall_swin` with ``input_shape``.

    Args:
        model: a torchvision ``VisionTransformer`` (``vit_b_16``, ``vit_l_16``, ...) or a timm
            ``VisionTransformer`` (``vit_*``, ``deit_*``: class token, register tokens,
            ``global_pool`` ``"token"``, ``"avg"``, ``"max"`` or ``"avgmax"``), not yet walled.
        spec: the dead patches, a :class:`~camwall.walls.WallSpec` over the ``h x w`` patch
            grid (``14 x 14`` for ``vit_b_16`` at 224), a ``{"rows", "cols"}`` dict or a
            region string such as ``"rows=10:"`` (the bottom 4 patch rows of 14).
        input_shape: ``(C, H, W)``; a ViT's must be its own size (the default), a torchvision
            Swin's default is ``(3, 224, 224)``.

    Returns:
        ``model``, with every attention layer masked, an averaging head pooling the live
        tokens only, and its description (:func:`~camwall.walls.describe`) recording the wall
        (an ``"attention"`` entry: layer, grid, region, prefix tokens, pool, dead patches), the
        input shape, the target layer (the last block's first LayerNorm) and the reshape
        (:func:`camwall.tokens.token_grid` on the patch grid). The parameters are the same
        tensors (nothing is copied), so an optimizer built before still updates them.

    Raises:
        CamwallError: for a model that is not such a ViT or a Swin (MaxViT and others
        with the reason), a layer variant it cannot mask, a wall that blocks everything (for a
        Swin: one not aligned to its coarsest grid), or a model already walled.
    """
    from camwall.walls._swin import is_swin, wall_swin

    if is_swin(model):
        return wall_swin(model, spec, input_shape)
    if input_shape is not None:
        vit_input_shape(model, input_shape, "wall_vit")
    library = _library(model)
    if library is None:
        refuse_windowed(model, "wall_vit")
        raise CamwallError(
            f"wall_vit walls torchvision's and timm's VisionTransformer (vit_*, deit_*); "
            f"{type(model).__name__} is neither (a CNN is walled by "
            "camwall.walls.walled_torchvision(name, walls=...))."
        )
    if any(
        isinstance(m, (TorchvisionMaskedAttention, TimmMaskedAttention)) for m in model.modules()
    ):
        raise CamwallError("wall_vit: this ViT is already walled; wall a fresh model.")
    _, h, w = vit_grid(model)
    spec, dead = _dead_grid(spec, h, w)
    if library == "torchvision":
        layer, prefix, pool = _wall_torchvision(model, dead)
    else:
        layer, prefix, pool = _wall_timm(model, dead)
    entry = {
        "kind": "attention",
        "layer": layer,
        "grid": [h, w],
        "region": spec.to_dict(),
        "prefix_tokens": prefix,
        "pool": pool,
        "dead_patches": torch.nonzero(dead.flatten()).flatten().tolist(),
    }
    declare(model, walls=(*describe(model).walls, entry))
    describe_vit(model)
    return model


def describe_vit(model: Any) -> str:
    """Declare a ViT's input shape, target layer (the last block's first LayerNorm) and
    reshape (:func:`camwall.tokens.token_grid`); returns the target layer."""
    shape, h, w = vit_grid(model)
    if _library(model) == "torchvision":
        last = list(model.encoder.layers.named_children())[-1][0]
        target, prefix = f"encoder.layers.{last}.ln_1", 1
    else:
        target, prefix = f"blocks.{len(model.blocks) - 1}.norm1", int(model.num_prefix_tokens)
    declare(model, input_shape=shape, target_layer=target, reshape=token_grid(prefix, (h, w)))
    return target


def _wall_torchvision(model: Any, dead: Tensor) -> tuple[str, int, str]:
    """Mask every encoder block of a torchvision ViT (class token first, class-token head)."""
    allowed = token_mask(dead, 1)
    for block in model.encoder.layers:  # checked before anything is changed
        if type(block.self_attention) is not nn.MultiheadAttention:
            raise CamwallError(
                f"wall_vit: {type(block.self_attention).__name__} is not torchvision's "
                "nn.MultiheadAttention; it cannot be masked."
            )
    masked = [TorchvisionMaskedAttention(b.self_attention, allowed) for b in model.encoder.layers]
    for block, attention in zip(model.encoder.layers, masked):
        block.self_attention = attention
    model.camwall_constants = ("class_token",)
    model.encoder.camwall_constants = ("pos_embedding",)
    return "encoder", 1, "token"


def _wall_timm(model: Any, dead: Tensor) -> tuple[str, int, str]:
    """Mask every block of a timm ViT and, for an averaging head, pool the live tokens."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block, ResPostBlock

    prefix, pool = int(model.num_prefix_tokens), str(model.global_pool)
    own = sorted(n for n, _ in model.named_parameters(recurse=False))
    unknown = [n for n in own if n not in _TOKEN_CONSTANTS]
    if model.attn_pool is not None or pool not in ("token", "avg", "max", "avgmax") or unknown:
        raise CamwallError(
            f"wall_vit: this timm ViT ({type(model).__name__}, global_pool={pool!r}"
            f"{', own parameters ' + str(unknown) if unknown else ''}) has a head or parameters "
            "it cannot wall; class-token ('token') and averaging ('avg', 'max', 'avgmax') "
            "heads are supported."
        )
    if not isinstance(model.patch_drop, nn.Identity):
        raise CamwallError(
            "wall_vit: a timm ViT with patch dropout cannot be walled; set patch_drop_rate=0."
        )
    allowed = token_mask(dead, prefix)
    for i, block in enumerate(model.blocks):  # checked before anything is changed
        attn = getattr(block, "attn", None)
        if type(block) not in (Block, ResPostBlock) or type(attn) is not Attention:
            raise CamwallError(
                f"wall_vit: block {i} ({type(block).__name__} with {type(attn).__name__}) is "
                "not timm's Block with its standard Attention; it cannot be masked."
            )
    for block in model.blocks:
        block.attn = TimmMaskedAttention(block.attn, allowed)
    model.camwall_constants = tuple(own)
    if pool != "token" and bool(dead.any()):
        live = ~dead.flatten()
        if model.pool_include_prefix:
            live = torch.cat([torch.ones(prefix, dtype=torch.bool), live])
        model.attn_pool = LiveTokenPool(live, pool)
    return "blocks", prefix, pool


#: The layer a ViT's wall is named by in walled_torchvision / walled_timm (its encoder).
_ENCODER = {"torchvision": "encoder", "timm": "blocks"}


def wall_named_vit(model: nn.Module, walls: Sequence[tuple[str, WallSpec]], where: str) -> str:
    """The walls of :func:`~camwall.walls.walled_torchvision` / ``walled_timm`` for a ViT: at
    most one, named by the encoder layer (``"encoder"`` for torchvision, ``"blocks"`` for
    timm), its region on the patch grid; :func:`wall_vit` with it. Without a wall, the
    unwalled twin: the same masked attention layers with nothing masked (the same function,
    and :func:`~camwall.walls.dead_zone` can analyse it). Returns the target layer.
    """
    library = _library(model)
    assert library is not None
    layer = _ENCODER[library]
    if walls:
        _, h, w = vit_grid(model)
        if len(walls) != 1 or walls[0][0] != layer:
            got = ", ".join(name for name, _ in walls)
            raise CamwallError(
                f"{where}: a ViT takes one wall, on its {h} x {w} patch grid, for its encoder "
                f"layer {layer!r}, e.g. '{layer}:rows={h - max(1, h // 4)}:' (the bottom "
                f"{max(1, h // 4)} patch rows); got walls for {got}."
            )
        wall_vit(model, walls[0][1])
        return describe_vit(model)
    _, h, w = vit_grid(model)  # the unwalled twin: the same layers, nothing masked
    (_wall_torchvision if library == "torchvision" else _wall_timm)(model, torch.zeros(h, w) > 0)
    return describe_vit(model)


def vit_input_shape(
    model: nn.Module, given: Sequence[int] | None, where: str
) -> tuple[int, int, int]:
    """The ViT's own ``(C, H, W)``; ``given`` must be it (a ViT runs at one size only)."""
    shape, _, _ = vit_grid(model)
    if given is not None and tuple(int(v) for v in given) != shape:
        raise CamwallError(
            f"{where}: input_shape {tuple(given)} is not this ViT's input size {shape}; leave "
            "it out, or build the model for that size (torchvision image_size=, timm img_size=)."
        )
    return shape
