"""SESS: a base CAM method over scaled, sliding-window patches (pytorch-grad-cam 1.5.7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod, Needs
from camwall.cams._checks import (
    Check,
    as_given,
    base_options,
    non_negative,
    number,
    one_of,
    positive_int,
)
from camwall.cams._layers import method_map
from camwall.cams._perlayer import per_layer
from camwall.cams._post import normalize_maps
from camwall.cams._targets import score_rows
from camwall.errors import CamwallError

__all__ = ["SESS", "gaussian_blur", "window_starts"]


def window_starts(length: int, step: int, window: int) -> list[int]:
    """Window starts along one side; the last window is shifted back inside (grad-cam)."""
    starts = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def resized_short_side(x: Tensor, scale: int) -> Tensor:
    """torchvision's ``resize(x, scale)`` on tensors: the shorter side becomes ``scale``,
    bilinear with antialiasing; N x C x H x W -> N x C x H' x W'."""
    h, w = x.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = scale, int(scale * long / short)
    size = (new_long, new_short) if w <= h else (new_short, new_long)
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def gaussian_blur(maps: Tensor, ksize: int = 11, sigma: float = 5.0) -> Tensor:
    """OpenCV's ``GaussianBlur(map, (ksize, ksize), sigma)`` on B x H x W float32 maps:
    separable kernel ``exp(-(i - (ksize-1)/2)^2 / (2 sigma^2))`` (normalized in float64),
    reflect-101 borders (torch's ``reflect``)."""
    i = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).float().to(maps.device)
    pad = ksize // 2
    x = F.pad(maps[:, None], (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, ksize))
    x = F.conv2d(x, k.view(1, 1, ksize, 1))
    return x[:, 0]


@dataclass(frozen=True)
class _Patch:
    image: int
    scale: int  # index into the per-image scaled inputs
    y: int
    x: int


class SessOptions:
    """Validated SESS options."""

    def __init__(self, opts: dict[str, Any], h: int, w: int) -> None:
        self.window = opts["sess_window"] or min(h, w)
        self.step = opts["sess_step"] or self.window
        for name, v in (("sess_window", self.window), ("sess_step", self.step)):
            positive_int(name, v)
        scales = opts["sess_scales"]
        if scales is None:
            step = round(self.window * float(opts["sess_scale_step_ratio"]))
            n = opts["sess_num_scales"]
            scales = [self.window + step * i for i in range(n)]
        if any(s < self.window for s in scales):
            raise CamwallError(
                f"option sess_scales must all be at least the window size {self.window}; "
                f"got {list(scales)}."
            )
        self.scales = [int(s) for s in scales]
        self.pre_filter = float(opts["sess_pre_filter"])
        if not 0.0 <= self.pre_filter < 1.0:
            raise CamwallError(f"option sess_pre_filter must be in [0, 1), got {self.pre_filter}.")
        self.chunk = opts["sess_chunk"]


def _base_method(name: str, value: Any) -> str:
    """A registered method other than sess itself."""
    if value == "sess" or value not in METHODS:
        known = ", ".join(n for n in METHODS if n != "sess")
        raise CamwallError(f"option {name} must be one of {known}; got {value!r}.")
    return value


@METHODS.add
class SESS(CamMethod, name="sess"):
    """SESS (Tursun et al., 2022, https://arxiv.org/abs/2207.01769), as pytorch-grad-cam 1.5.7.

    For each image (H x W, window ``s = sess_window`` default ``min(H, W)``): resize it so its
    shorter side is each scale ``s + round(s * 2/7) * j``, j < 12 (``sess_scales`` to choose);
    slide an s x s window with stride ``sess_step`` (default s, last window shifted inside).
    Patch score ``p = max(0, softmax(model(patch))_c)`` (``sess_softmax=False``: the raw
    target score); the lowest ``sess_pre_filter`` share is dropped; patch weight ``p / max p``.
    Each patch's final ``sess_base`` map (default gradcam, s x s, same target) times its weight
    is pasted at its place in the scaled frame (zeros elsewhere) and resized bilinearly to
    H x W. Fusion ``sess_pool="mean"``: per pixel, the mean over the patches whose value there
    exceeds ``sess_theta`` (0 where none); ``"max"``: the maximum. Then a Gaussian blur (11 x 11,
    sigma 5; ``sess_smooth``) and per-image min-max normalization.
    Patches of all images are scored and explained in chunks of ``sess_chunk``.
    ``sess_base_options``: the base method's own options; ``eigen_smooth`` applies to each
    patch's base map (as grad-cam's SESS passes it to its base). With several target layers
    each patch's base map is the base method's over all of them (grad-cam's aggregation).
    """

    default = False
    spans_layers = True
    options: ClassVar[dict[str, Any]] = {
        "sess_base": "gradcam",
        "sess_scales": None,
        "sess_num_scales": 12,
        "sess_scale_step_ratio": 2.0 / 7.0,
        "sess_window": None,
        "sess_step": None,
        "sess_pre_filter": 0.0,
        "sess_theta": 0.0,
        "sess_pool": "mean",
        "sess_smooth": True,
        "sess_softmax": True,
        "sess_chunk": 32,
        "sess_base_options": None,
    }
    checks: ClassVar[dict[str, Check]] = {
        "sess_base": _base_method,
        "sess_scales": as_given,  # checked against the window size
        "sess_num_scales": positive_int,
        "sess_scale_step_ratio": non_negative,
        "sess_window": as_given,  # None or 0: min(H, W); then checked by SessOptions
        "sess_step": as_given,  # None or 0: the window; then checked by SessOptions
        "sess_pre_filter": as_given,  # in [0, 1), checked by SessOptions
        "sess_theta": number,
        "sess_pool": one_of("mean", "max"),
        "sess_smooth": as_given,
        "sess_softmax": as_given,
        "sess_chunk": positive_int,
        "sess_base_options": base_options,
    }
    chunk_option = "sess_chunk"
    chunk_budget = 2**19  # patches, each scored and then explained by the base method

    def layers_map(self, ctxs: Sequence[CamContext], eigen_smooth: bool = False) -> Tensor:
        """The fused map; each patch's base map over every target layer (the engine's
        per-layer aggregation), ``eigen_smooth`` applied to it (as grad-cam's SESS)."""
        return self._map(list(ctxs), eigen_smooth)

    def _map(self, ctxs: list[CamContext], eigen_smooth: bool) -> Tensor:
        ctx = ctxs[0]
        h, w = ctx.input_size
        o = SessOptions(self.opts, h, w)
        x = ctx.x
        scaled = [resized_short_side(x, s) for s in o.scales]  # each B x C x H_s x W_s
        patches = [
            _Patch(i, j, y, x0)
            for i in range(x.shape[0])
            for j, sx in enumerate(scaled)
            for y in window_starts(sx.shape[-2], o.step, o.window)
            for x0 in window_starts(sx.shape[-1], o.step, o.window)
        ]

        def crop(p: _Patch) -> Tensor:
            return scaled[p.scale][p.image, :, p.y : p.y + o.window, p.x : p.x + o.window]

        scores = self._scores(ctx, patches, crop, o.chunk)
        kept, weights = self._keep(patches, scores, o.pre_filter, x.shape[0])
        maps = self._patch_maps(ctxs, kept, crop, o.chunk, eigen_smooth)
        fused = self._fuse(kept, maps * weights[:, None, None], scaled, o, (h, w), x.shape[0])
        if self.opts["sess_smooth"]:
            fused = gaussian_blur(fused)
        return normalize_maps(fused)

    def _scores(self, ctx: CamContext, patches: list[_Patch], crop: Any, chunk: int) -> Tensor:
        out = []
        for start in range(0, len(patches), chunk):
            part = patches[start : start + chunk]
            batch = torch.stack([crop(p) for p in part])
            try:
                logits = ctx.runner.run_model(batch)
            except RuntimeError as err:
                raise CamwallError(
                    f"sess runs the model on {tuple(batch.shape[-2:])} patches and "
                    f"{type(ctx.runner.model).__name__} refuses them ({str(err)[:80]}); use a "
                    f"model with global pooling, or sess_window / sess_scales it accepts."
                ) from None
            if self.opts["sess_softmax"]:
                logits = torch.softmax(logits, dim=-1)
            out.append(score_rows(logits, [p.image for p in part], ctx.targets))
        return torch.cat(out).clamp_min(0)

    @staticmethod
    def _keep(
        patches: list[_Patch], scores: Tensor, pre_filter: float, b: int
    ) -> tuple[list[_Patch], Tensor]:
        """Per image: drop the lowest-scoring share, weight = score / max score (or 1)."""
        kept: list[_Patch] = []
        weights: list[Tensor] = []
        owners = torch.tensor([p.image for p in patches])
        for i in range(b):
            mine = (owners == i).nonzero()[:, 0]
            s = scores[mine]
            order = torch.argsort(s, stable=True)[int(len(s) * pre_filter) :]
            top = s[order[-1]]
            weights.append(s[order] / top if float(top) > 0 else torch.ones_like(s[order]))
            kept.extend(patches[int(j)] for j in mine[order])
        return kept, torch.cat(weights)

    def _patch_maps(
        self,
        ctxs: list[CamContext],
        kept: list[_Patch],
        crop: Any,
        chunk: int,
        eigen_smooth: bool,
    ) -> Tensor:
        """The base method's final map of each kept patch (``sess_base_options``) over every
        target layer, chunk by chunk: one recorded pass per chunk for all layers."""
        ctx = ctxs[0]
        base = METHODS.get(self.opts["sess_base"])(**(self.opts["sess_base_options"] or {}))
        if eigen_smooth and not type(base).eigen_smooth:
            raise CamwallError(
                f"eigen_smooth does not apply to sess_base={base.name}; call it without."
            )
        need = Needs.of([type(base)])
        out = []
        for start in range(0, len(kept), chunk):
            part = kept[start : start + chunk]
            batch = torch.stack([crop(p) for p in part])
            targets = [ctx.targets[p.image] for p in part]
            subs = per_layer(ctx.runner.capture_layers(batch, targets, need))
            with torch.no_grad():
                out.append(method_map(base, subs, eigen_smooth).float())
        return torch.cat(out)

    def _fuse(
        self,
        kept: list[_Patch],
        maps: Tensor,
        scaled: list[Tensor],
        o: SessOptions,
        size: tuple[int, int],
        b: int,
    ) -> Tensor:
        """Paste each weighted patch map into its scaled frame, resize to ``size``, fuse."""
        theta, use_max = float(self.opts["sess_theta"]), self.opts["sess_pool"] == "max"
        total = maps.new_zeros(b, *size)
        counts = maps.new_zeros(b, *size)
        for j, sx in enumerate(scaled):
            rows = [r for r, p in enumerate(kept) if p.scale == j]
            if not rows:
                continue
            frames = maps.new_zeros(len(rows), 1, *sx.shape[-2:])
            for n, r in enumerate(rows):
                p = kept[r]
                frames[n, 0, p.y : p.y + o.window, p.x : p.x + o.window] = maps[r]
            if tuple(sx.shape[-2:]) != size:
                frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
            for n, r in enumerate(rows):
                i, cam = kept[r].image, frames[n, 0]
                if use_max:
                    total[i] = torch.maximum(total[i], cam)
                else:
                    mask = cam > theta
                    total[i] += torch.where(mask, cam, 0)
                    counts[i] += mask
        if use_max:
            return total
        return torch.where(counts > 0, total / counts.clamp_min(1), 0)
