"""Walled Vision Transformers: dead patch tokens that no live token and no output can see.

A ViT cuts the input into ``P x P`` patches, one token each, plus a class token. A *walled*
ViT blocks a set of patch tokens (the *dead tokens*, e.g. the bottom patch rows) with a
structural boolean attention mask, the same at every layer (a buffer, never learned):

* a live token and the class token attend only to live tokens and the class token;
* a dead token attends to every token (it still computes: interesting for CAMs);
* the output reads the class token only (class-token pooling), never a dead token.

So nothing a dead token holds ever reaches a live token or the class token, at any depth, and
the input pixels of the dead patches cannot change the logits. Layer by layer (``N`` tokens):

* patch embedding: a ``P x P`` conv with stride ``P``: token ``t`` reads only its own patch;
* LayerNorm over the ``D`` channels of one token, the MLP and the residual adds: per token;
* attention: ``out_i = sum_j p_ij v_j`` with ``p_ij = 0`` exactly where ``allowed[i, j]`` is
  False (the scores are set to ``-inf`` before the softmax), and the values of those tokens
  are never read: row ``i`` multiplies ``p`` by ``v`` with the disallowed ``v_j`` set to 0
  (:meth:`MaskedSoftmax.read`), so ``0 x inf`` cannot bring a NaN from a dead token (e.g. an
  input of 1e25, whose LayerNorm overflows) into a live one. For finite values this is
  bit-identical to ``p v``: the products it replaces were ``0 x v_j = 0`` already.

:func:`camwall.walls.dead_zone` proves this with the structural surrogates of
:class:`PatchTokens` and :class:`MaskedSoftmax` (their ``camwall_structural`` methods);
:func:`camwall.walls.verify_wall` confirms it by perturbation.

The module names follow torchvision's ``VisionTransformer`` (``conv_proj``, ``ln_1``,
``self_attention``, ``ln_2``, ``mlp``, ``ln``, ``head``). The declared reshape
(``describe(model).reshape``, a :func:`camwall.tokens.token_grid`) turns the target layer's
``B x N x D`` tokens into a ``B x D x h x w`` map for the CAM engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.tokens import token_grid
from camwall.walls._models import MODELS, _check_args, _tag
from camwall.walls._spec import WallSpec

__all__ = [
    "EncoderBlock",
    "MaskedSelfAttention",
    "MaskedSoftmax",
    "PatchTokens",
    "WalledViT",
    "attention_mask",
    "fashion_vit",
    "walled_vit",
]


def attention_mask(dead: Tensor) -> Tensor:
    """The walled attention mask for ``dead`` (bool ``[h, w]`` patch grid, True = dead).

    Token 0 is the class token, token ``1 + r * w + c`` patch ``(r, c)``. Returns bool
    ``allowed`` of shape ``N x N`` (``N = 1 + h w``): ``allowed[i, j] = dead_i or not dead_j``,
    i.e. a live token (and the class token, which is live) attends only to live tokens, a dead
    token to all.
    """
    dead_tok = torch.cat([torch.zeros(1, dtype=torch.bool), dead.flatten().cpu()])
    return dead_tok[:, None] | ~dead_tok[None, :]


class PatchTokens(nn.Module):
    """Patch grid -> tokens: ``B x D x h x w`` -> ``B x (1 + h w) x D``.

    Prepends the learned class token and adds the learned position embedding (``1 x N x D``).
    A leaf module, so that its parameters are replaced as a whole by its structural surrogate.
    """

    def __init__(self, dim: int, num_patches: int) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, 1 + num_patches, dim).normal_(std=0.02))

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        cls = self.class_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embedding

    def camwall_structural(self, x: Tensor) -> Tensor:
        """Structural surrogate (see :func:`camwall.walls.dead_zone`): patch ``t`` -> token
        ``1 + t`` unchanged; the position embedding is a constant (dropped) and the class
        token a positive constant (1: it depends on no pixel, but a 0 would hide the
        dependence of the products ``q_0 . k_j`` on ``k_j``)."""
        tokens = x.flatten(2).transpose(1, 2)
        return torch.cat([torch.ones_like(tokens[:, :1]), tokens], dim=1)


class MaskedSoftmax(nn.Module):
    """Softmax over the last axis of ``B x heads x N x N`` attention scores, with the scores
    of disallowed pairs set to ``-inf`` first: ``p_ij = 0`` exactly where ``allowed[i, j]`` is
    False.

    ``allowed`` (bool ``N x N``) is a persistent buffer fixed by the architecture: loading a
    state dict whose mask differs is refused (a :class:`~camwall.errors.CamwallError`).
    Every row must allow at least its own token (checked), so no row is all ``-inf``.
    """

    allowed: Tensor
    patterns: Tensor
    pattern_of_row: Tensor

    def __init__(self, allowed: Tensor) -> None:
        super().__init__()
        if allowed.dim() != 2 or allowed.shape[0] != allowed.shape[1]:
            raise CamwallError(f"attention mask must be N x N, got {tuple(allowed.shape)}.")
        if not bool(allowed.diagonal().all()):
            raise CamwallError("attention mask must let every token attend to itself.")
        self.register_buffer("allowed", allowed.to(torch.bool).clone())
        # The distinct mask rows (P x N) and each row's pattern (N): not saved, derived.
        patterns, inverse = torch.unique(self.allowed, dim=0, return_inverse=True)
        self.register_buffer("patterns", patterns, persistent=False)
        self.register_buffer("pattern_of_row", inverse, persistent=False)
        self._reads_all = [bool(row.all()) for row in patterns]

    def forward(self, scores: Tensor) -> Tensor:
        return torch.softmax(scores.masked_fill(~self.allowed, float("-inf")), dim=-1)

    def read(self, p: Tensor, v: Tensor) -> Tensor:
        """``p v`` (``B x heads x N x N`` by ``B x heads x N x d``) where row ``i`` reads only
        the values its mask row allows: for each distinct mask row, ``p (v with the
        disallowed tokens set to 0)``, kept on the rows with that mask. A disallowed value,
        even inf or NaN, never reaches the row (``p_ij v_j`` would be ``0 x inf = NaN``)."""
        out: Tensor | None = None
        for k, reads_all in enumerate(self._reads_all):
            values = v if reads_all else v.masked_fill(~self.patterns[k][:, None], 0)
            part = torch.matmul(p, values)
            rows = (self.pattern_of_row == k)[:, None]
            out = part if out is None else torch.where(rows, part, out)
        assert out is not None  # at least one row
        return out

    def camwall_structural(self, scores: Tensor) -> Tensor:
        """Structural surrogate: ``p_ij`` reads every allowed score of row ``i`` and is 0
        (no connection) where ``allowed[i, j]`` is False. Its value is exactly ``allowed``
        (``m / m.detach()`` with ``m`` the mean allowed score), so values do not grow with
        depth while the gradient ``1 / m`` stays positive."""
        keep = self.allowed.to(scores.dtype)
        m = (scores * keep).sum(-1, keepdim=True) / keep.sum(-1, keepdim=True)
        return m / m.detach() * keep

    def camwall_check_state(self, state: Mapping[str, Tensor], prefix: str) -> str | None:
        """What is wrong with the mask ``state[prefix + "allowed"]`` (``None``: it is this
        layer's mask, or absent; a strict load reports a missing key)."""
        mask = state.get(prefix + "allowed")
        if mask is None:
            return None
        if tuple(mask.shape) == tuple(self.allowed.shape) and torch.equal(
            mask.to(torch.bool).cpu(), self.allowed.cpu()
        ):
            return None
        return (
            f"the attention mask {prefix}allowed is not the architecture's mask (the wall would "
            "break); the file was modified or holds another model"
        )

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        problem = self.camwall_check_state(state_dict, prefix)
        if problem:
            raise CamwallError(f"{problem}; refusing to load it.")
        super()._load_from_state_dict(state_dict, prefix, *args)


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention with a fixed boolean mask.

    ``q, k, v = split(qkv(x))`` (``B x heads x N x D/heads``),
    ``p = attend(q k^T / sqrt(D / heads))`` (:class:`MaskedSoftmax`; hook ``attend`` to read
    the attention probabilities, ``B x heads x N x N``), ``out_proj(p v)`` (heads merged; each
    row reads only its allowed values, :meth:`MaskedSoftmax.read`).
    """

    def __init__(self, dim: int, heads: int, allowed: Tensor) -> None:
        super().__init__()
        if dim % heads:
            raise CamwallError(f"ViT dim {dim} must be a multiple of heads {heads}.")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attend = MaskedSoftmax(allowed)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = self.attend(torch.matmul(q, k.transpose(-2, -1)) * (d // self.heads) ** -0.5)
        return self.out_proj(self.attend.read(p, v).transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, allowed: Tensor) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = MaskedSelfAttention(dim, heads, allowed)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class WalledViT(nn.Module):
    """A small ViT with class-token pooling and a structural attention wall.

    ``conv_proj`` (``C -> D``, ``P x P``, stride ``P``) -> ``tokens`` (:class:`PatchTokens`)
    -> ``blocks`` (``depth`` x :class:`EncoderBlock`) -> ``ln`` -> class token -> ``head``.

    Args:
        image_size: input side ``S`` (a multiple of ``patch_size``).
        channels: input channels ``C``.
        patch_size: ``P``; the patch grid is ``S/P x S/P``.
        dim, depth, heads, mlp_dim: transformer sizes.
        num_classes: outputs.
        dead: bool ``[S/P, S/P]`` dead patches, or ``None`` (no wall: every token sees all).
        conv_stem: ``conv_proj`` is three non-overlapping convs (``2 x 2`` stride 2 to
            ``D/4`` channels, GELU, ``2 x 2`` stride 2 to ``D/2``, GELU, ``P/4 x P/4`` stride
            ``P/4`` to ``D``) instead of one ``P x P`` conv: still one token per patch, reading
            only its patch, with a non-linear patch embedding (``P`` a multiple of 4).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        num_classes: int,
        dead: Tensor | None,
        conv_stem: bool = False,
    ) -> None:
        super().__init__()
        side = image_size // patch_size
        n = side * side
        dead = torch.zeros(side, side, dtype=torch.bool) if dead is None else dead
        allowed = attention_mask(dead)
        self.grid = (side, side)
        self.conv_proj = _patch_embedding(channels, dim, patch_size, conv_stem)
        self.tokens = PatchTokens(dim, n)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, heads, mlp_dim, allowed) for _ in range(depth)]
        )
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        convs = [m for m in self.conv_proj.modules() if isinstance(m, nn.Conv2d)]
        for i, conv in enumerate(convs):  # He (fan-in) before a GELU, unit gain for the last
            fan_in = conv.in_channels * math.prod(conv.kernel_size)
            gain = 1.0 if i == len(convs) - 1 else 2.0
            nn.init.trunc_normal_(conv.weight, std=math.sqrt(gain / fan_in))
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln(self.blocks(self.tokens(self.conv_proj(x))))
        return self.head(x[:, 0])


def _patch_embedding(channels: int, dim: int, patch_size: int, conv_stem: bool) -> nn.Module:
    if not conv_stem:
        return nn.Conv2d(channels, dim, patch_size, stride=patch_size)
    if patch_size % 4 or dim % 4:
        raise CamwallError(
            f"a ViT conv_stem needs patch_size ({patch_size}) and dim ({dim}) multiples of 4."
        )
    last = patch_size // 4
    return nn.Sequential(
        nn.Conv2d(channels, dim // 4, 2, stride=2),
        nn.GELU(),
        nn.Conv2d(dim // 4, dim // 2, 2, stride=2),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, last, stride=last),
    )


def dead_patches(side: int, dead_rows: int) -> Tensor:
    """Bool ``[side, side]``: the bottom ``dead_rows`` patch rows."""
    return WallSpec(rows=(side - dead_rows, None)).blocked(side, side)


def build_vit(
    arch: str,
    kwargs: dict[str, Any],
    input_shape: tuple[int, int, int],
    patch_size: int,
    sizes: dict[str, Any],
    dead_rows: int | None,
) -> WalledViT:
    """Build and tag a :class:`WalledViT` (``dead_rows=None``: the unwalled twin).

    Its description (:func:`~camwall.walls.describe`) records the walls (one ``"attention"``
    entry: the blocks, the patch grid, the dead region on it and the dead patch indices), the
    target layer (the last block's ``ln_1``: its output is the tokens the last attention reads)
    and the reshape (:func:`camwall.tokens.token_grid` on the patch grid).
    """
    c, s, _ = input_shape
    side = s // patch_size
    dead = dead_patches(side, dead_rows) if dead_rows else None
    model = WalledViT(s, c, patch_size, num_classes=kwargs["num_classes"], dead=dead, **sizes)
    walls: list[dict[str, Any]] = []
    if dead is not None:
        entry = {
            "kind": "attention",
            "layer": "blocks",
            "grid": [side, side],
            "region": WallSpec(rows=(side - int(dead_rows or 0), None)).to_dict(),
            "dead_patches": torch.nonzero(dead.flatten()).flatten().tolist(),
        }
        walls.append(entry)
    target = f"blocks.{sizes['depth'] - 1}.ln_1"
    reshape = token_grid(1, (side, side))
    _tag(model, arch, kwargs, input_shape, target, reshape=reshape, walls=tuple(walls))
    return model


@MODELS.add
def walled_vit(
    num_classes: int = 10,
    walled: bool = True,
    image_size: int = 64,
    channels: int = 1,
    patch_size: int = 8,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_dim: int = 128,
    dead_rows: int = 3,
    conv_stem: bool = False,
) -> WalledViT:
    """A walled ViT (or its unwalled twin with ``walled=False``) for ``channels x image_size x
    image_size`` inputs: the bottom ``dead_rows`` patch rows are dead tokens.

    The dead zone is input rows ``image_size - dead_rows * patch_size ..`` (all columns).
    Defaults: 1 x 64 x 64 inputs, 8 x 8 patches (an 8 x 8 grid of 64 tokens + the class
    token), dead patch rows 5..7 = input rows **40..63** (24 rows, 37.5% of the canvas; the
    patch band closest to ``fashion-vgg``'s rows 39..63).
    """
    _check_args(
        walled, num_classes=num_classes, image_size=image_size, channels=channels,
        patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim,
        dead_rows=dead_rows,
    )  # fmt: skip
    side = image_size // patch_size
    if side * patch_size != image_size or not 0 < dead_rows < side:
        raise CamwallError(
            f"walled_vit: image_size {image_size} must be a multiple of patch_size {patch_size} "
            f"and dead_rows {dead_rows} between 1 and {side - 1} patch rows."
        )
    kwargs = {
        "num_classes": num_classes, "walled": walled, "image_size": image_size,
        "channels": channels, "patch_size": patch_size, "dim": dim, "depth": depth,
        "heads": heads, "mlp_dim": mlp_dim, "dead_rows": dead_rows, "conv_stem": conv_stem,
    }  # fmt: skip
    sizes = {"dim": dim, "depth": depth, "heads": heads, "mlp_dim": mlp_dim,
             "conv_stem": conv_stem}  # fmt: skip
    shape = (channels, image_size, image_size)
    return build_vit("walled-vit", kwargs, shape, patch_size, sizes, dead_rows if walled else None)


@MODELS.add
def fashion_vit(
    num_classes: int = 10,
    walled: bool = True,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_dim: int = 128,
    conv_stem: bool = False,
) -> WalledViT:
    """The embedded walled ViT (or baseline) for 1 x 64 x 64 canvases in [0, 1].

    :func:`walled_vit` with 8 x 8 patches (8 x 8 grid + class token) and the bottom 3 patch
    rows dead: the dead zone is input rows **40..63** (24 rows, 37.5%), all columns. Target
    layer ``blocks.{depth-1}.ln_1``; its declared reshape drops the class token and lays the 64
    patch tokens out on the 8 x 8 grid. ``conv_stem=True`` (the ``fashion-vit`` preset's
    choice) embeds each patch with three non-overlapping convs instead of one (see
    :class:`WalledViT`); the dead zone is the same. About 0.14 M parameters (0.15 M with the
    stem).
    """
    _check_args(walled, num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                mlp_dim=mlp_dim)  # fmt: skip
    kwargs = {"num_classes": num_classes, "walled": walled, "dim": dim, "depth": depth,
              "heads": heads, "mlp_dim": mlp_dim}  # fmt: skip
    if conv_stem:  # recorded only when set, so older checkpoints keep their kwargs
        kwargs["conv_stem"] = True
    sizes = {"dim": dim, "depth": depth, "heads": heads, "mlp_dim": mlp_dim,
             "conv_stem": conv_stem}  # fmt: skip
    return build_vit("fashion-vit", kwargs, (1, 64, 64), 8, sizes, 3 if walled else None)
