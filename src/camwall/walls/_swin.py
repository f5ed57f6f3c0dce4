"""Walls for Swin transformers (torchvision's and timm's, V1 and V2), in place.

A Swin transformer cuts a ``C x H x W`` input into ``P x P`` patches (an ``h x w`` patch grid,
``h = H / P``), runs ``S`` stages of blocks that attend within ``M x M`` windows (every other
block on the grid cyclically shifted by ``M / 2``), and merges ``2 x 2`` tokens between
stages: stage ``s`` has an ``h / 2^s x w / 2^s`` grid, the last one the *coarsest grid*
(``7 x 7`` for ``swin_t`` at 224), whose cells are ``c x c`` patches, ``c = 2^(S-1)``.

:func:`wall_swin` walls a region of the patch grid that is a union of whole coarse cells
(any other region is refused with one line saying why and giving an aligned example). Let
``dead_s`` be the coarse dead map upsampled to stage ``s``'s grid (a merged token is dead iff
its ``2 x 2`` group is, and an aligned group is all dead or all live). Then:

* every window attention gets the structural mask: within window ``u`` (after the model's own
  padding and cyclic shift of the tokens and of ``dead_s``), ``allowed[u, i, j] = dead_i or
  not dead_j``. Scores ``s = q k^T / sqrt(d) + B_rel (+ the model's shift mask, 0 / -100)``
  are ``masked_fill``-ed with ``-inf`` where not allowed (a NaN or inf score of a dead key
  cannot leak), ``p = softmax(s)``, and a live row reads ``p (v with the dead values set to
  0)`` (no ``0 x inf``), a dead row ``p v`` (:class:`WindowSoftmax`);
* the head averages the live tokens only (:class:`LiveGridPool`: torchvision ``avgpool``,
  timm ``head.global_pool``).

Patch embedding (a ``P x P`` conv of stride ``P``), LayerNorm, MLP and residual adds are per
token and patch merging is per aligned ``2 x 2`` group, so the dead patches' pixels cannot
change the logits: the dead zone is exactly the dead patches (``dead_zone`` proves it through
the modules' ``camwall_structural`` methods; the shift mask and the relative position bias
are constants, the shift mask a ``-100``, not a structural zero).

The masked attention modules hold the original parameters under the original names (a plain
torchvision or timm state dict loads unchanged; the masks are derived from the recorded wall
and not saved). Without dead patches they compute the original function with the same ops.
In :func:`~camwall.walls.walled_torchvision` the wall is named ``"features"`` (torchvision's
stage container), in :func:`~camwall.walls.walled_timm` ``"layers"`` (timm's).

Swin V2 (torchvision ``swin_v2_t`` / ``_s`` / ``_b``, timm ``swinv2_*``) is walled the same
way (:class:`TorchvisionWindowAttentionV2`, :class:`TimmWindowAttentionV2`): its cosine scores
``normalize(q) normalize(k)^T exp(min(logit_scale, log 100))`` plus
``16 sigmoid(cpb_mlp(coords))`` (a constant of the weights) get the same mask; its post-norm
blocks and patch merging are per token and per aligned group. Refused: a grid that some stage
would pad before merging (``h`` or ``w`` not a multiple of ``c``), a model mixing V1 and V2
blocks, and windows built per forward (timm ``dynamic_img_size``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.tokens import channels_last_grid
from camwall.walls._info import declare, describe
from camwall.walls._spec import WallSpec

__all__ = [
    "SWIN_LAYER",
    "CosineNormalize",
    "JoinedBiasLinear",
    "KeyBiasFreeLinear",
    "LiveGridPool",
    "TimmWindowAttention",
    "TimmWindowAttentionV2",
    "TorchvisionWindowAttention",
    "TorchvisionWindowAttentionV2",
    "WindowSoftmax",
    "describe_swin",
    "is_swin",
    "swin_geometry",
    "wall_named_swin",
    "wall_swin",
    "window_dead",
]

#: The layer a Swin's wall is named by in walled_torchvision / walled_timm (its stages).
SWIN_LAYER = {"torchvision": "features", "timm": "layers"}

_LIBRARIES = {
    ("SwinTransformer", "torchvision.models.swin_transformer"): "torchvision",
    ("SwinTransformer", "timm.models.swin_transformer"): "timm",
    ("SwinTransformerV2", "timm.models.swin_transformer_v2"): "timm",
}

Geometry = tuple[tuple[int, int, int], tuple[int, int], int]
"""``((C, H, W), (h, w), S)``: input shape, patch grid, number of stages."""


def _library(model: nn.Module) -> str | None:
    for cls in type(model).__mro__:
        found = _LIBRARIES.get((cls.__name__, cls.__module__))
        if found is not None:
            return found
    return None


def is_swin(model: nn.Module) -> bool:
    """True for torchvision's ``SwinTransformer`` (V1 or V2 blocks) and timm's (V1, V2)."""
    return _library(model) is not None


def window_dead(
    dead: Tensor, window: Sequence[int], shift: Sequence[int], pad_first: bool
) -> Tensor:
    """Bool ``[nW, M_h M_w]``: ``dead`` (bool ``[H, W]`` stage grid) padded with live cells to
    multiples of the window (``Hp x Wp``), rolled by ``-shift`` (torchvision pads first, timm
    rolls first) and cut into windows as the tokens are (row-major windows, row-major inside)."""
    (hh, ww), (mh, mw) = dead.shape, (int(window[0]), int(window[1]))
    hp, wp = hh + (-hh) % mh, ww + (-ww) % mw
    shifts, dims = (-int(shift[0]), -int(shift[1])), (0, 1)
    grid = dead.to(torch.bool).cpu()
    if not pad_first:
        grid = torch.roll(grid, shifts, dims)
    padded = torch.zeros(hp, wp, dtype=torch.bool)
    padded[:hh, :ww] = grid
    if pad_first:
        padded = torch.roll(padded, shifts, dims)
    return padded.view(hp // mh, mh, wp // mw, mw).permute(0, 2, 1, 3).reshape(-1, mh * mw)


def _shift_mask(size: tuple[int, int], window: Sequence[int], shift: Sequence[int]) -> Tensor:
    """torchvision's additive shift mask on the padded ``Hp x Wp`` grid: ``[nW, N, N]``, 0
    where tokens ``i, j`` of a window come from the same region of the unshifted grid, ``-100``
    otherwise (regions: the slices ``:-M``, ``-M:-s``, ``-s:`` of each axis)."""
    (hp, wp), (mh, mw), (sh, sw) = size, window, shift
    label = torch.zeros(hp, wp)
    count = 0
    for rows in ((0, -mh), (-mh, -sh), (-sh, None)):
        for cols in ((0, -mw), (-mw, -sw), (-sw, None)):
            label[rows[0] : rows[1], cols[0] : cols[1]] = count
            count += 1
    windows = label.view(hp // mh, mh, wp // mw, mw).permute(0, 2, 1, 3).reshape(-1, mh * mw)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowSoftmax(nn.Module):
    """Softmax of window attention scores with the structural mask, and the masked read.

    ``dead`` (bool ``[nW, N]``): the dead tokens of each window; ``allowed[u, i, j] = dead_i
    or not dead_j``. ``shift`` (``[nW, N, N]``, 0 / -100, or None): the model's own additive
    shift mask. Scores are ``(B nW) x heads x N x N`` (window ``u`` of image ``b`` at row
    ``b nW + u``): ``p = softmax(masked_fill(s + shift, not allowed, -inf))``. Buffers not
    saved (derived from the recorded wall and the grid).
    """

    dead: Tensor
    allowed: Tensor
    shift: Tensor | None

    def __init__(self, dead: Tensor, shift: Tensor | None) -> None:
        super().__init__()
        dead = dead.to(torch.bool)
        self.register_buffer("dead", dead, persistent=False)
        self.register_buffer("allowed", dead[:, :, None] | ~dead[:, None, :], persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.any_dead = bool(dead.any())

    def _windows(self, t: Tensor) -> Tensor:
        """``(B nW) x heads x N x K`` -> ``B x nW x heads x N x K``."""
        return t.view(-1, self.dead.shape[0], *t.shape[1:])

    def forward(self, scores: Tensor) -> Tensor:
        if self.shift is not None:
            shift = self.shift.to(scores.dtype).unsqueeze(1).unsqueeze(0)
            scores = (self._windows(scores) + shift).view(scores.shape)
        if self.any_dead:
            blocked = ~self.allowed[None, :, None]
            scores = self._windows(scores).masked_fill(blocked, float("-inf")).view(scores.shape)
        return torch.softmax(scores, dim=-1)

    def read(self, p: Tensor, v: Tensor) -> Tensor:
        """``p v`` (``(B nW) x heads x N x N`` by ``(B nW) x heads x N x d``) where a live row
        reads the values of live tokens only: ``p (v with dead v_j = 0)``, a dead row ``p v``
        (a dead value, even inf or NaN, never meets a live row's 0)."""
        if not self.any_dead:
            return p @ v
        dead = self.dead[None, :, None, :, None]  # B x nW x heads x N x d
        live_v = self._windows(v).masked_fill(dead, 0).view(v.shape)
        out = torch.where(dead, self._windows(p @ v), self._windows(p @ live_v))
        return out.view(v.shape)

    def camwall_structural(self, scores: Tensor) -> Tensor:
        """Structural surrogate: ``p_uij`` reads every allowed score of row ``i`` of window
        ``u`` and is 0 where not allowed; its value is ``allowed`` (``m / m.detach()``, ``m``
        the mean allowed score). The shift mask adds a constant: no connection is removed."""
        keep = self.allowed.to(scores.dtype)[None, :, None]
        s = self._windows(scores)
        m = (s * keep).sum(-1, keepdim=True) / keep.sum(-1, keepdim=True)
        return (m / m.detach() * keep).view(scores.shape)

    def extra_repr(self) -> str:
        nw, n = self.dead.shape
        return f"windows={nw}, tokens={n}, dead_tokens={int(self.dead.sum())}"


def _relative_bias(table: Tensor, index: Tensor, n: int) -> Tensor:
    """``1 x heads x N x N``: ``table[index]`` (``(2M-1)^2 x heads`` at ``N x N`` indices)."""
    bias = table[index.view(-1)].view(n, n, -1)
    return bias.permute(2, 0, 1).contiguous().unsqueeze(0)


class TorchvisionWindowAttention(nn.Module):
    """torchvision's ``ShiftedWindowAttention`` (V1) with the structural mask, for one stage
    grid ``H x W``: ``B x H x W x C -> B x H x W x C``.

    Pad to multiples of the window ``M`` (``Hp x Wp``), roll by ``-shift`` (0 on an axis whose
    padded size is at most ``M``), cut into ``nW`` windows of ``N = M_h M_w`` tokens,
    ``q, k, v = qkv(x)``, ``s = (q / sqrt(d)) k^T + B_rel``, ``p = attend(s)``
    (:class:`WindowSoftmax`, with the shift mask), ``proj(attend.read(p, v))``, then windows
    back, roll back, unpad. Same parameters and state-dict keys (``qkv``, ``proj``,
    ``relative_position_bias_table``, ``relative_position_index``).
    """

    relative_position_index: Tensor

    def __init__(self, attn: Any, dead: Tensor) -> None:
        super().__init__()
        hh, ww = (int(v) for v in dead.shape)
        self.grid = (hh, ww)
        self.window_size = [int(v) for v in attn.window_size]
        self.num_heads = int(attn.num_heads)
        self.attention_dropout = float(attn.attention_dropout)
        self.dropout = float(attn.dropout)
        self.qkv, self.proj = attn.qkv, attn.proj
        self._position(attn)
        self.register_buffer("relative_position_index", attn.relative_position_index)
        mh, mw = self.window_size
        padded = (hh + (-hh) % mh, ww + (-ww) % mw)
        given = [int(v) for v in attn.shift_size]
        self.shift_size = [0 if m >= p else s for m, p, s in zip(self.window_size, padded, given)]
        shift = (
            _shift_mask(padded, self.window_size, self.shift_size) if sum(self.shift_size) else None
        )
        self.attend = WindowSoftmax(
            window_dead(dead, self.window_size, self.shift_size, True), shift
        )

    def _position(self, attn: Any) -> None:
        """The position-bias parameters (V1: the learned table, a constant of the data)."""
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.camwall_constants: tuple[str, ...] = ("relative_position_bias_table",)

    def forward(self, x: Tensor) -> Tensor:
        b, hh, ww, c = x.shape
        if (hh, ww) != self.grid:
            raise CamwallError(
                f"a walled Swin's attention is built for its {self.grid[0]} x {self.grid[1]} "
                f"stage grid, got {hh} x {ww}; run the model at its walled input size."
            )
        (mh, mw), (sh, sw) = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, (-ww) % mw, 0, (-hh) % mh))
        hp, wp = x.shape[1], x.shape[2]
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        x = x.view(b, hp // mh, mh, wp // mw, mw, c).permute(0, 1, 3, 2, 4, 5)
        x = self._attention(x.reshape(-1, mh * mw, c))
        x = x.view(b, hp // mh, wp // mw, mh, mw, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :hh, :ww, :].contiguous()

    def _attention(self, x: Tensor) -> Tensor:
        """``(B nW) x N x C`` windows -> the same: masked multi-head attention."""
        bw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = self._scores(q, k)
        p = F.dropout(self.attend(scores), p=self.attention_dropout, training=self.training)
        x = self.attend.read(p, v).transpose(1, 2).reshape(bw, n, c)
        return F.dropout(self.proj(x), p=self.dropout, training=self.training)

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        """``(q / sqrt(d)) k^T + B_rel``: ``(B nW) x heads x N x N``."""
        scores = (q * q.shape[-1] ** -0.5).matmul(k.transpose(-2, -1))
        return scores + _relative_bias(
            self.relative_position_bias_table, self.relative_position_index, q.shape[-2]
        )


def _cosine_scores(m: Any, q: Tensor, k: Tensor) -> Tensor:
    """Swin V2's scores (torchvision's and timm's, the same ops in the same order):
    ``normalize(q) normalize(k)^T exp(min(logit_scale, log 100)) + 16 sigmoid(B_cpb)``,
    ``B_cpb = cpb_mlp(relative_coords_table)`` at ``relative_position_index``; ``q``, ``k``
    ``(B nW) x heads x N x d``, the scores ``(B nW) x heads x N x N``. ``m``: the masked V2
    attention holding those parameters and its :class:`CosineNormalize`."""
    heads, n = q.shape[1], q.shape[-2]
    table = m.cpb_mlp(m.relative_coords_table).view(-1, heads)
    bias = 16 * torch.sigmoid(_relative_bias(table, m.relative_position_index, n))
    scores = m.normalize(q) @ m.normalize(k).transpose(-2, -1)
    return scores * torch.clamp(m.logit_scale, max=math.log(100.0)).exp() + bias


class CosineNormalize(nn.Module):
    """``F.normalize(t, dim=-1)`` (``... x d``), as a layer, so that :func:`dead_zone` reads
    its connections (every output reads the whole vector) instead of its gradient (which is
    zero along the vector itself)."""

    def forward(self, t: Tensor) -> Tensor:
        return F.normalize(t, dim=-1)

    def camwall_structural(self, t: Tensor) -> Tensor:
        """Every output reads every entry of its vector: their mean."""
        return t.mean(-1, keepdim=True).expand_as(t)


class KeyBiasFreeLinear(nn.Linear):
    """``nn.Linear`` for a ``q, k, v`` projection whose key third of the bias is read as 0 at
    every call (torchvision's Swin V2 does so): ``x W^T + (b with b[n/3 : 2n/3] = 0)``."""

    @classmethod
    def sharing(cls, linear: nn.Linear) -> KeyBiasFreeLinear:
        """A ``KeyBiasFreeLinear`` holding ``linear``'s own weight and bias parameters."""
        out = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta"
        )
        out.weight = linear.weight
        out.bias = linear.bias
        return out

    def forward(self, x: Tensor) -> Tensor:
        bias: Tensor | None = None
        if self.bias is not None:
            bias = self.bias.clone()
            third = bias.numel() // 3
            bias[third : 2 * third].zero_()
        return F.linear(x, self.weight, bias)


class TorchvisionWindowAttentionV2(TorchvisionWindowAttention):
    """torchvision's ``ShiftedWindowAttentionV2`` with the structural mask: as
    :class:`TorchvisionWindowAttention`, with torchvision V2's scores
    ``s = normalize(q) normalize(k)^T exp(min(logit_scale, log 100)) + 16 sigmoid(B_cpb)``,
    ``B_cpb = cpb_mlp(relative_coords_table)[relative_position_index]`` (a constant of the
    weights), and the key bias of ``qkv`` zeroed at every call as torchvision does. Same
    parameters and state-dict keys (``logit_scale``, ``cpb_mlp``, ``relative_coords_table``).
    """

    relative_coords_table: Tensor

    def _position(self, attn: Any) -> None:
        self.qkv = KeyBiasFreeLinear.sharing(attn.qkv)
        self.logit_scale = attn.logit_scale
        self.cpb_mlp = attn.cpb_mlp
        self.register_buffer("relative_coords_table", attn.relative_coords_table)
        self.normalize = CosineNormalize()
        self.camwall_constants = ("logit_scale",)

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return _cosine_scores(self, q, k)


class TimmWindowAttention(nn.Module):
    """timm's ``WindowAttention`` with the structural mask: ``(B nW) x N x C`` windows (cut by
    the block, after its roll and padding) ``-> (B nW) x N x C``.

    ``q, k, v = qkv(x)``, ``s = (q scale) k^T + B_rel``, ``p = attn_drop(attend(s))``
    (:class:`WindowSoftmax` holding the block's own shift mask ``attn_mask``, which the block
    passes as ``mask``), ``proj_drop(proj(attend.read(p, v)))``. Same parameters and
    state-dict keys (``qkv``, ``proj``, ``relative_position_bias_table``).
    """

    relative_position_index: Tensor

    def __init__(self, attn: Any, dead_windows: Tensor, shift: Tensor | None) -> None:
        super().__init__()
        self.num_heads = int(attn.num_heads)
        self.qkv, self.attn_drop = attn.qkv, attn.attn_drop
        self.proj, self.proj_drop = attn.proj, attn.proj_drop
        index = attn.relative_position_index
        self.register_buffer("relative_position_index", index, persistent=False)
        self._position(attn)
        self.attend = WindowSoftmax(dead_windows, shift)

    def _position(self, attn: Any) -> None:
        """The position-bias parameters (V1: the learned table, a constant of the data)."""
        self.scale = float(attn.scale)
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.camwall_constants: tuple[str, ...] = ("relative_position_bias_table",)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if (mask is None) != (self.attend.shift is None):
            raise CamwallError(
                "a walled Swin's window attention holds its block's shift mask; call it from "
                "its block (mask=block.attn_mask)."
            )
        bw, n, _ = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        p = self.attn_drop(self.attend(self._scores(q, k)))
        x = self.attend.read(p, v).transpose(1, 2).reshape(bw, n, -1)
        return self.proj_drop(self.proj(x))

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        """``(q scale) k^T + B_rel``: ``(B nW) x heads x N x N``."""
        scores = (q * self.scale) @ k.transpose(-2, -1)
        return scores + _relative_bias(
            self.relative_position_bias_table, self.relative_position_index, q.shape[-2]
        )


class JoinedBiasLinear(nn.Linear):
    """timm Swin V2's ``q, k, v`` projection as one layer: ``x W^T + cat(q_bias, k_bias,
    v_bias)``, ``W`` the shared ``qkv.weight`` (``qkv`` has no bias of its own), the biases
    read from the attention module that holds them (``owner``: not a submodule, so the state
    dict keeps timm's keys ``attn.q_bias``, ``attn.v_bias``)."""

    @classmethod
    def sharing(cls, linear: nn.Linear, owner: nn.Module) -> JoinedBiasLinear:
        """A ``JoinedBiasLinear`` holding ``linear``'s weight, its biases on ``owner``."""
        out = cls(linear.in_features, linear.out_features, bias=False, device="meta")
        out.weight = linear.weight
        out.__dict__["owner"] = owner  # a plain reference: deepcopy and .to() follow the model
        return out

    def forward(self, x: Tensor) -> Tensor:
        owner = self.__dict__["owner"]
        bias = torch.cat((owner.q_bias, owner.k_bias, owner.v_bias))
        return F.linear(x, weight=self.weight, bias=bias)


class TimmWindowAttentionV2(TimmWindowAttention):
    """timm's Swin V2 ``WindowAttention`` with the structural mask: as
    :class:`TimmWindowAttention`, with the scores
    ``s = normalize(q) normalize(k)^T exp(min(logit_scale, log 100)) + 16 sigmoid(B_cpb)``,
    ``B_cpb = cpb_mlp(relative_coords_table)[relative_position_index]`` (a constant of the
    weights), and ``qkv`` with the joined bias ``cat(q_bias, k_bias, v_bias)``
    (:class:`JoinedBiasLinear`). Same parameters and state-dict keys.
    """

    relative_coords_table: Tensor
    k_bias: Tensor

    def _position(self, attn: Any) -> None:
        if getattr(attn, "qkv_bias_separate", False):
            raise CamwallError(
                "wall_swin: a timm Swin V2 with qkv_bias_separate=True adds its bias after the "
                "projection; build it with the default qkv_bias_separate=False."
            )
        if attn.q_bias is not None:
            self.q_bias, self.v_bias = attn.q_bias, attn.v_bias
            self.register_buffer("k_bias", attn.k_bias, persistent=False)
            self.qkv = JoinedBiasLinear.sharing(attn.qkv, self)
        self.logit_scale = attn.logit_scale
        self.cpb_mlp = attn.cpb_mlp
        self.register_buffer("relative_coords_table", attn.relative_coords_table, persistent=False)
        self.normalize = CosineNormalize()
        self.camwall_constants = tuple(n for n, _ in self.named_parameters(recurse=False))

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        return _cosine_scores(self, q, k)


class LiveGridPool(nn.Module):
    """The average over the live cells of the coarsest grid only.

    ``channels_last``: ``B x h x w x C -> B x C`` (timm's ``head.global_pool``), else
    ``B x C x h x w -> B x C x 1 x 1`` (torchvision's ``avgpool``): the mean of the cells
    ``index`` (the live ones); with every cell live exactly the original mean. A dead cell is
    never read. Structurally: every output channel reads that channel of every live cell.
    """

    index: Tensor

    def __init__(self, live: Tensor, channels_last: bool) -> None:
        super().__init__()
        self.grid = (int(live.shape[0]), int(live.shape[1]))
        self.channels_last = channels_last
        self.all_live = bool(live.all())
        self.register_buffer("index", torch.nonzero(live.flatten()).flatten(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        size = tuple(x.shape[1:3] if self.channels_last else x.shape[2:4])
        if size != self.grid:
            raise CamwallError(
                f"a walled Swin's head pools its {self.grid[0]} x {self.grid[1]} grid, got "
                f"{size[0]} x {size[1]}; run the model at its walled input size."
            )
        if self.all_live:
            return x.mean((1, 2)) if self.channels_last else x.mean((2, 3), keepdim=True)
        return self._live_mean(x)

    def _live_mean(self, x: Tensor) -> Tensor:
        if self.channels_last:
            return x.flatten(1, 2).index_select(1, self.index).mean(1)
        return x.flatten(2).index_select(2, self.index).mean(2)[..., None, None]

    def camwall_structural(self, x: Tensor) -> Tensor:
        """Every output channel reads that channel of every live cell."""
        return self._live_mean(x)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, live_cells={self.index.numel()}"


def swin_geometry(model: Any, input_shape: Sequence[int] | None, where: str) -> Geometry:
    """``((C, H, W), (h, w), S)`` of a Swin: the input shape (torchvision: ``input_shape``,
    default ``(3, 224, 224)``; timm: its own ``img_size``, ``input_shape`` must equal it), the
    ``h x w = H / P x W / P`` patch grid and the ``S`` stages. Refused: ``H`` or ``W`` not a
    multiple of ``P``, or ``h``, ``w`` not multiples of ``2^(S-1)`` (a stage would pad before
    merging), or a timm model with a dynamic image size."""
    given = None if input_shape is None else tuple(int(v) for v in input_shape)
    if _library(model) == "torchvision":
        conv = model.features[0][0]
        stages = len(model.features) // 2
        shape = given or (int(conv.in_channels), 224, 224)
    else:
        embed = model.patch_embed
        if getattr(model, "dynamic_img_size", False) or any(
            getattr(b, "dynamic_mask", False) for b in model.modules()
        ):
            raise CamwallError(
                f"{where}: a timm Swin with a dynamic image size builds its windows per forward; "
                "build it with strict_img_size=True (the default)."
            )
        conv, stages = embed.proj, len(model.layers)
        shape = (int(conv.in_channels), int(embed.img_size[0]), int(embed.img_size[1]))
        if given is not None and given != shape:
            raise CamwallError(
                f"{where}: input_shape {given} is not this Swin's input size {shape}; leave it "
                "out, or build the model with img_size= for that size."
            )
    if len(shape) != 3 or shape[0] != int(conv.in_channels):
        raise CamwallError(f"{where}: input_shape {shape} must be ({conv.in_channels}, H, W).")
    ph, pw = (int(v) for v in conv.stride)
    cell = 2 ** (stages - 1)
    h, w = shape[1] // ph, shape[2] // pw
    if shape[1] % ph or shape[2] % pw or h % cell or w % cell:
        raise CamwallError(
            f"{where}: input {shape[1]} x {shape[2]} must be a multiple of {ph * cell} x "
            f"{pw * cell} px (patches {ph} x {pw}, merged {cell} x {cell} over {stages} "
            "stages), so that no stage pads before merging; e.g. 224 x 224."
        )
    return (shape[0], shape[1], shape[2]), (h, w), stages


def _aligned_dead(
    spec: Any, grid: tuple[int, int], stages: int, where: str
) -> tuple[WallSpec, Tensor]:
    """The wall as a :class:`WallSpec` and its bool ``[h / c, w / c]`` coarse dead map; refused
    unless its dead patches are whole ``c x c`` cells (``c = 2^(S-1)``) and some stay live."""
    from camwall.walls._vit_any import _dead_grid

    spec, dead = _dead_grid(spec, grid[0], grid[1], where)
    (h, w), cell = grid, 2 ** (stages - 1)
    coarse = dead.view(h // cell, cell, w // cell, cell).any(3).any(1)
    if not torch.equal(_upsample(coarse, cell), dead):
        raise CamwallError(
            f"{where}: the wall {spec.describe()} is not aligned to this Swin's coarsest grid: "
            f"the {h} x {w} patch grid is merged to {h // cell} x {w // cell} cells of {cell} x "
            f"{cell} patches, so the region's patch rows and columns must be multiples of "
            f"{cell}, e.g. 'rows={h - cell}:' (the bottom cell row)."
        )
    return spec, coarse


def _upsample(coarse: Tensor, factor: int) -> Tensor:
    """Each cell of a bool grid as a ``factor x factor`` block."""
    return coarse.repeat_interleave(factor, 0).repeat_interleave(factor, 1)


def _tv_stages(model: Any) -> tuple[list[nn.Sequential], type[TorchvisionWindowAttention]]:
    """torchvision's stages (``features.1, .3, ...``), their blocks checked to be all V1 or
    all V2 ones, and the masked attention class for them."""
    from torchvision.models import swin_transformer as tv

    versions = {
        TorchvisionWindowAttention: (
            tv.PatchMerging,
            tv.SwinTransformerBlock,
            tv.ShiftedWindowAttention,
        ),
        TorchvisionWindowAttentionV2: (
            tv.PatchMergingV2,
            tv.SwinTransformerBlockV2,
            tv.ShiftedWindowAttentionV2,
        ),
    }
    stages = list(model.features)[1::2]
    merges = list(model.features)[2::2]
    blocks = [b for stage in stages for b in stage]
    for masked, (merge, block, attn) in versions.items():
        if all(type(m) is merge for m in merges) and all(
            type(b) is block and type(b.attn) is attn for b in blocks
        ):
            return stages, masked
    raise CamwallError(
        "wall_swin: this torchvision Swin has blocks or patch merging other than all V1 "
        "(SwinTransformerBlock / ShiftedWindowAttention / PatchMerging) or all V2 ones "
        "(SwinTransformerBlockV2 / ShiftedWindowAttentionV2 / PatchMergingV2); it cannot be "
        "masked."
    )


def _is_v2(model: nn.Module) -> bool:
    """True for a Swin V2 (torchvision's ``SwinTransformerBlockV2``, timm's
    ``SwinTransformerV2Block``)."""
    names = ("SwinTransformerBlockV2", "SwinTransformerV2Block")
    return any(type(m).__name__ in names for m in model.modules())


def _wall_torchvision(model: Any, coarse: Tensor) -> None:
    """Mask every block of a torchvision Swin; pool the live cells when some are dead."""
    stages, masked_attention = _tv_stages(model)
    masked: list[tuple[Any, TorchvisionWindowAttention]] = []
    for s, stage in enumerate(stages):
        dead = _upsample(coarse, 2 ** (len(stages) - 1 - s))
        masked += [(b, masked_attention(b.attn, dead)) for b in stage]
    for block, attn in masked:
        block.attn = attn
    if bool(coarse.any()):
        model.avgpool = LiveGridPool(~coarse, channels_last=False)


def _timm_attention(model: Any) -> type[TimmWindowAttention]:
    """The masked attention for a timm Swin whose head averages (``global_pool="avg"``),
    without own parameters, and whose blocks are all ``SwinTransformerBlock`` with
    ``WindowAttention`` (V1) or all ``SwinTransformerV2Block`` with V2's ``WindowAttention``."""
    from timm.models import swin_transformer as v1
    from timm.models import swin_transformer_v2 as v2

    pool: Any = getattr(model.head, "global_pool", None)
    own = [n for n, _ in model.named_parameters(recurse=False)]
    kind = getattr(pool, "pool_type", None)
    if kind != "avg" or getattr(pool.pool, "flatten", None) is not True or own:
        raise CamwallError(
            f"wall_swin: this timm Swin (global_pool={kind!r}"
            f"{', own parameters ' + str(own) if own else ''}) has a head it cannot wall; "
            "build it with global_pool='avg' (the default)."
        )
    kinds: dict[type[TimmWindowAttention], tuple[type, type, type]] = {
        TimmWindowAttention: (v1.SwinTransformerBlock, v1.WindowAttention, v1.PatchMerging),
        TimmWindowAttentionV2: (v2.SwinTransformerV2Block, v2.WindowAttention, v2.PatchMerging),
    }
    blocks: list[Any] = [b for stage in model.layers for b in stage.blocks]
    merges = [s.downsample for s in model.layers if not isinstance(s.downsample, nn.Identity)]
    for masked, (block, attn, merge) in kinds.items():
        if all((type(b), type(b.attn)) == (block, attn) for b in blocks) and all(
            type(m) is merge for m in merges
        ):
            return masked
    names = sorted({f"{type(b).__name__} with {type(b.attn).__name__}" for b in blocks})
    raise CamwallError(
        f"wall_swin: this timm Swin has {', '.join(names)}, not all timm's "
        "SwinTransformerBlock with WindowAttention (V1) or all SwinTransformerV2Block with its "
        "WindowAttention (V2), with their PatchMerging; it cannot be masked."
    )


def _wall_timm(model: Any, coarse: Tensor) -> None:
    """Mask every block of a timm Swin and pool the live cells in ``head.global_pool``."""
    masked_attention = _timm_attention(model)
    stages = len(model.layers)
    masked: list[tuple[Any, TimmWindowAttention]] = []
    for s, stage in enumerate(model.layers):
        dead = _upsample(coarse, 2 ** (stages - 1 - s))
        for b in stage.blocks:
            if tuple(b.input_resolution) != tuple(dead.shape):
                raise CamwallError(
                    f"wall_swin: a block's grid {tuple(b.input_resolution)} is not its stage's "
                    f"{tuple(dead.shape)}; build the model without changing its input size."
                )
            windows = window_dead(dead, b.window_size, b.shift_size, pad_first=False)
            masked.append((b, masked_attention(b.attn, windows, b.attn_mask)))
    for block, attn in masked:
        block.attn = attn
    model.head.global_pool = LiveGridPool(~coarse, channels_last=True)


def _walled(model: nn.Module) -> bool:
    return any(
        isinstance(m, (TorchvisionWindowAttention, TimmWindowAttention)) for m in model.modules()
    )


def wall_swin(
    model: nn.Module,
    spec: WallSpec | Mapping[str, Any] | str,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Wall a torchvision or timm Swin transformer (V1) in place (see the module docstring).

    Args:
        model: torchvision ``swin_t`` / ``swin_s`` / ``swin_b`` (any ``SwinTransformer`` with
            V1 blocks) or timm ``swin_*`` (``SwinTransformer``, ``global_pool="avg"``).
        spec: the dead patches, a :class:`~camwall.walls.WallSpec` over the ``h x w`` patch
            grid (``56 x 56`` for ``swin_t`` at 224), a ``{"rows", "cols"}`` dict or a region
            string such as ``"rows=48:"`` (the bottom coarse cell row of 7): a union of whole
            ``c x c`` cells of the coarsest grid (``c = 8`` for 4 stages).
        input_shape: ``(C, H, W)`` the wall is built for; torchvision default
            ``(3, 224, 224)``, timm its own ``img_size`` (any other is refused).

    Returns:
        ``model``: every window attention masked, the head pooling the live cells, and its
        description recording the wall (an ``"attention"`` entry: layer, patch grid, coarse
        grid, region, pool, dead patches), input shape, target layer (the last block's
        ``norm1``) and reshape (``B x h x w x C`` -> ``B x C x h x w``). Same parameter
        tensors.

    Raises:
        CamwallError: a misaligned, empty-of-life or bad wall, an input size that pads before
        merging, Swin V2, other blocks or heads, or a model already walled.
    """
    return _wall_swin(model, spec, input_shape, "wall_swin")


def _wall_swin(
    model: nn.Module, spec: Any, input_shape: Sequence[int] | None, where: str
) -> nn.Module:
    """:func:`wall_swin`, its errors naming ``where``."""
    if _library(model) is None:
        from camwall.walls._vit_any import refuse_windowed

        refuse_windowed(model, where)  # MaxViT and others: with the reason
        raise CamwallError(
            f"{where}: {type(model).__name__} is not torchvision's or timm's SwinTransformer."
        )
    if _walled(model):
        raise CamwallError(f"{where}: this Swin is already walled; wall a fresh model.")
    shape, grid, stages = swin_geometry(model, input_shape, where)
    spec, coarse = _aligned_dead(spec, grid, stages, where)
    (_wall_torchvision if _library(model) == "torchvision" else _wall_timm)(model, coarse)
    dead = _upsample(coarse, 2 ** (stages - 1))
    entry = {
        "kind": "attention",
        "layer": SWIN_LAYER[str(_library(model))],
        "grid": list(grid),
        "coarse_grid": list(coarse.shape),
        "region": spec.to_dict(),
        "prefix_tokens": 0,
        "pool": "avg",
        "dead_patches": torch.nonzero(dead.flatten()).flatten().tolist(),
    }
    declare(model, walls=(*describe(model).walls, entry))
    describe_swin(model, shape)
    return model


def describe_swin(model: Any, shape: tuple[int, int, int]) -> str:
    """Declare a Swin's input shape, target layer (the ``B x h_c x w_c x C`` tokens of the
    coarsest grid that the last attention reads: V1 the last block's ``norm1``, torchvision V2
    the previous block) and reshape (:func:`camwall.tokens.channels_last_grid`); returns the
    target layer."""
    # post-norm (V2) blocks: the last attention reads the previous block's output, or the
    # last merge's; pre-norm (V1): the last block's norm1
    if _library(model) == "torchvision":
        last, depth = len(model.features) - 1, len(model.features[-1])
        stage, merge = f"features.{last}", f"features.{last - 1}"
    else:
        last, depth = len(model.layers) - 1, len(model.layers[-1].blocks)
        stage, merge = f"layers.{last}.blocks", f"layers.{last}.downsample"
    if not _is_v2(model):
        target = f"{stage}.{depth - 1}.norm1"
    else:
        target = f"{stage}.{depth - 2}" if depth > 1 else merge
    widths = {int(m.normalized_shape[0]) for n, m in model.named_modules() if n.endswith("norm1")}
    reshape = channels_last_grid(tuple(sorted(widths)))
    declare(model, input_shape=shape, target_layer=target, reshape=reshape)
    return target


def wall_named_swin(
    model: nn.Module,
    walls: Sequence[tuple[str, WallSpec]],
    input_shape: Sequence[int] | None,
    where: str,
) -> tuple[str, tuple[int, int, int]]:
    """The walls of :func:`~camwall.walls.walled_torchvision` / ``walled_timm`` for a Swin: at
    most one, named ``"features"`` (torchvision) or ``"layers"`` (timm), its region on the
    patch grid; :func:`wall_swin` with it. Without a wall, the unwalled twin: the same masked
    layers with nothing dead. Returns the target layer and the input shape."""
    layer = SWIN_LAYER[str(_library(model))]
    shape, (h, w), stages = swin_geometry(model, input_shape, where)
    if walls:
        cell = 2 ** (stages - 1)
        if len(walls) != 1 or walls[0][0] != layer:
            got = ", ".join(name for name, _ in walls)
            raise CamwallError(
                f"{where}: a Swin takes one wall, on its {h} x {w} patch grid in whole {cell} x "
                f"{cell} cells, for its layer {layer!r}, e.g. '{layer}:rows={h - cell}:'; got "
                f"walls for {got}."
            )
        _wall_swin(model, walls[0][1], shape, where)
        return str(describe(model).target_layer), shape
    cell = 2 ** (stages - 1)
    coarse = torch.zeros(h // cell, w // cell, dtype=torch.bool)
    (_wall_torchvision if _library(model) == "torchvision" else _wall_timm)(model, coarse)
    return describe_swin(model, shape), shape
