"""AblationCAM: channel weights from the score drop when a channel is ablated (no gradient)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, number, positive_int
from camwall.cams._eigen import first_component
from camwall.cams._outputs import take_rows
from camwall.cams._targets import score_rows
from camwall.errors import CamwallError

__all__ = ["AblationCAM", "channels_to_ablate", "score_drop"]


class _AblatedRows:
    """One reused buffer of ``chunk`` copies of feature maps ``a`` (B x K x h x w), for the
    ablated batches: ``ablated(rows, channels, value)`` gives ``n`` rows, row ``i`` a copy of
    ``a[rows[i]]`` with channel ``channels[i]`` set to ``value``, and restores those channels
    afterwards. A row is copied only when its slot held another image, so a batch costs
    ``O(n h w)`` writes instead of ``O(n K h w)``; the same values as fresh copies. If the run
    wrote into its input (an in-place op in the tail: the buffer's version counter moved),
    every slot is copied again for the next batch."""

    def __init__(self, a: Tensor, chunk: int) -> None:
        self.a = a
        self.buf = torch.empty(
            (min(chunk, a.shape[0] * a.shape[1]), *a.shape[1:]), dtype=a.dtype, device=a.device
        )
        self.owner = torch.full((self.buf.shape[0],), -1, dtype=torch.long, device=a.device)

    @contextlib.contextmanager
    def ablated(self, rows: Tensor, channels: Tensor, value: float) -> Iterator[Tensor]:
        n = rows.shape[0]
        stale = (self.owner[:n] != rows).nonzero()[:, 0]
        if stale.numel():
            self.buf[stale] = self.a[rows[stale]]
            self.owner[stale] = rows[stale]
        batch, idx = self.buf[:n], torch.arange(n, device=rows.device)
        batch[idx, channels] = value
        version = self.buf._version
        try:
            yield batch
        finally:
            if self.buf._version != version:
                self.owner.fill_(-1)
            else:
                batch[idx, channels] = self.a[rows, channels]


def _ratio(name: str, value: Any) -> float:
    """A share of channels in (0, 1]."""
    ratio = number(name, value)
    if not 0.0 < ratio <= 1.0:
        raise CamwallError(f"option {name} must be in (0, 1] (1: every channel), got {value!r}.")
    return ratio


def _ablation_layer(name: str, value: Any) -> Any:
    """``None`` or an object with pytorch-grad-cam's ``AblationLayer`` protocol."""
    if value is None:
        return None
    if not callable(value) or not callable(getattr(value, "set_next_batch", None)):
        raise CamwallError(
            f"option {name} must be None or an ablation layer with pytorch-grad-cam's protocol "
            f"(set_next_batch(input_batch_index, activations, num_channels_to_ablate), an "
            f"indices attribute, and a call returning the ablated outputs); got "
            f"{type(value).__name__}."
        )
    return value


def score_drop(s0: Tensor, ablated: Tensor) -> Tensor:
    """``w = (s0 - s) / s0`` (B x K from B scores and B x K ablated scores).

    Where ``s0 = 0`` (e.g. an all-zero classifier head) the relative drop is undefined:
    pytorch-grad-cam divides by zero and its maps are NaN; camwall uses the drop
    ``s0 - s`` itself there (the map is min-max normalized, so only its sign matters).
    """
    s0 = s0[:, None]
    drop = s0 - ablated
    return torch.where(s0 != 0, drop / torch.where(s0 != 0, s0, 1.0), drop)


def channels_to_ablate(a: Tensor, ratio: float) -> Tensor:
    """The channels worth ablating in one image's maps ``a`` (K x h x w), as
    pytorch-grad-cam 1.5.7's ``AblationLayer.activations_to_be_ablated``.

    ``ratio = 1``: every channel. Else the mask ``N(|P|) > 0.01`` of the image's first
    principal projection ``P`` (:func:`camwall.cams._eigen.first_component`; its sign does not
    matter here); channel score ``sum(mask * n_k) / sum(n_k)`` with ``n_k = N(|A_k|)``
    (``N``: min-max without epsilon, as grad-cam: a constant channel scores NaN, ranked
    highest); the ``int(K * ratio)`` highest- and lowest-scoring channels, sorted (their
    union: grad-cam lists the overlap twice when ``ratio > 0.5`` and then misaligns scores).
    """
    k = a.shape[0]
    if ratio >= 1.0:
        return torch.arange(k, device=a.device)
    proj = first_component(a.double()[None])[0].abs()
    proj = proj - proj.min()
    mask = (proj / proj.max()) > 0.01
    n = a.float().abs().flatten(1)
    n = n - n.amin(dim=1, keepdim=True)
    n = n / n.amax(dim=1, keepdim=True)
    scores = (mask.flatten()[None] * n).sum(dim=1) / n.sum(dim=1)
    # many channels tie (score exactly 1 when the mask covers them): rank them in the order of
    # NumPy's default argsort, which is grad-cam's (a K-vector, once per image)
    order = torch.from_numpy(np.argsort(scores.cpu().numpy())).to(a.device)
    count = int(k * ratio)
    picked = torch.cat([order.flip(0)[:count], order[:count]])
    return torch.unique(picked)


@METHODS.add
class AblationCAM(CamMethod, name="ablationcam"):
    """Ablation-CAM (Desai & Ramaswamy, 2020, WACV).

    ``s0_b = y_b`` of the image; ``s_bk`` = the target score when channel k of A_b is set to
    ``ablation_value`` (default 0; in the layer's raw output when the ``reshape_transform`` has
    ``ablate``, e.g. :class:`camwall.cams.FpnGrid`); ``w_bk = (s0_b - s_bk) / s0_b``
    (:func:`score_drop`: the drop itself where ``s0_b = 0``); map ``= sum_k w_bk A_bk``.
    ``ablationcam_ratio < 1`` ablates only the channels :func:`channels_to_ablate` picks (the
    others get ``w = 0``, as in grad-cam). ``ablationcam_layer``: an ablation layer with
    pytorch-grad-cam's protocol (``set_next_batch``, ``indices``, called for the ablated raw
    outputs, and its own ``activations_to_be_ablated`` if it has one) makes the ablated copies
    instead of ``ablation_value``, image by image, as grad-cam; with a ``reshape_transform`` it
    works on the raw layer output (tokens, an FPN's dict), as grad-cam's layers do.

    Only the part of the model after the target layer is re-run, from the cached activations
    (the engine's ``head``, a Sequential split or a torch.fx split of the model's graph,
    :mod:`camwall.cams._tail`); where the graph cannot be cut the whole model is re-run with the
    layer's output replaced (the engine's ``info["tail"]`` says why). With several target
    layers each is ablated in turn (its own tail). Ablated copies are processed in chunks of
    ``ablationcam_chunk`` (default 32), mixing images, in one reused buffer: a chunk writes
    only the ablated channels (and restores them after the run) instead of copying every map;
    a tail is not handed copies of the input rows it never reads (:meth:`CamContext.run_tail`).
    Plain (not channels-last) inputs: grad-cam's maps to 1e-5 on random-weight ResNets.

    Deliberate difference from pytorch-grad-cam: it ablates layers with negative values to
    ``min - 1e7``; we always use ``ablation_value``. Results agree on non-negative layers.
    """

    options: ClassVar[dict[str, Any]] = {
        "ablationcam_chunk": 32,
        "ablation_value": 0.0,
        "ablationcam_ratio": 1.0,
        "ablationcam_layer": None,
    }
    checks: ClassVar[dict[str, Check]] = {
        "ablationcam_chunk": positive_int,
        "ablation_value": number,
        "ablationcam_ratio": _ratio,
        "ablationcam_layer": _ablation_layer,
    }
    reruns_tail = True
    ablates = True
    # the score drops (s0 - s_k) / s0 amplify the ~1e-7 rounding of channels-last convolutions
    # (1.5e-5 on a random-weight resnet50 at layer3, 8e-7 on plain inputs): plain inputs
    channels_last_ok = False
    chunk_option = "ablationcam_chunk"
    chunk_budget = 2**21  # 512 rows of 64 x 64 grey canvases; the default on 224 x 224 RGB

    def needs_inverse(self, reshape_transform: Any) -> bool:
        """A caller's ablation layer makes raw outputs itself: no inverse needed."""
        if self.opts["ablationcam_layer"] is not None:
            return False
        return super().needs_inverse(reshape_transform)

    def weights(self, ctx: CamContext) -> Tensor:
        a = ctx.raw_activations
        b, k = a.shape[:2]
        ratio = float(self.opts["ablationcam_ratio"])
        chosen = [self._channels(ctx.activations[i], ratio) for i in range(b)]
        owners = torch.cat([torch.full_like(c, i) for i, c in enumerate(chosen)])
        chans = torch.cat(chosen)
        if self.opts["ablationcam_layer"] is not None:
            scores = self._layer_scores(ctx, chosen)
        else:
            scores = self._zeroed_scores(ctx, owners, chans)
        ablated = ctx.scores[:, None].repeat(1, k)  # channels not ablated: no drop
        ablated[owners, chans] = scores
        return score_drop(ctx.scores, ablated)

    def _channels(self, a: Tensor, ratio: float) -> Tensor:
        """The channels to ablate in one image's maps ``a`` (K x h x w), sorted: the caller's
        ablation layer's own ``activations_to_be_ablated`` (NumPy in, indices out, as
        grad-cam) where it has one, else :func:`channels_to_ablate`."""
        pick = getattr(self.opts["ablationcam_layer"], "activations_to_be_ablated", None)
        if not callable(pick):
            return channels_to_ablate(a, ratio)
        picked = np.asarray(pick(a.cpu().numpy(), ratio), dtype=np.int64).reshape(-1)
        return torch.unique(torch.from_numpy(picked).to(a.device))

    def _zeroed_scores(self, ctx: CamContext, owners: Tensor, chans: Tensor) -> Tensor:
        """Target scores with channel ``chans[i]`` of image ``owners[i]`` set to the value."""
        chunk, value = self.opts["ablationcam_chunk"], self.opts["ablation_value"]
        raw = ctx.layer_output is not None and ctx.runner.ablates_raw
        rows_of = None if raw else _AblatedRows(ctx.raw_activations, chunk)
        values: list[Tensor] = []
        for start in range(0, len(owners), chunk):
            rows, part = owners[start : start + chunk], chans[start : start + chunk]
            if rows_of is None:  # the transform ablates the raw layer output itself
                logits = ctx.run_ablated(rows, part, value)
            else:
                with rows_of.ablated(rows, part, value) as batch:
                    logits = ctx.run_tail(batch, rows)
            values.append(score_rows(logits, rows.tolist(), ctx.targets))
        return torch.cat(values)

    def _layer_scores(self, ctx: CamContext, chosen: list[Tensor]) -> Tensor:
        """Target scores of the copies made by the caller's ablation layer, image by image, as
        pytorch-grad-cam: ``set_next_batch`` gets the layer's raw outputs (before any
        ``reshape_transform``: tokens, or an FPN's dict), the layer's call returns the ablated
        raw copies, and the model runs on from them (:meth:`CamContext.run_raw`)."""
        layer, chunk = self.opts["ablationcam_layer"], self.opts["ablationcam_chunk"]
        raw = ctx.raw_activations if ctx.layer_output is None else ctx.layer_output
        values: list[Tensor] = []
        for i, chans in enumerate(chosen):
            for start in range(0, len(chans), chunk):
                part = chans[start : start + chunk]
                rows = [i] * len(part)
                layer.set_next_batch(
                    input_batch_index=i, activations=raw, num_channels_to_ablate=len(part)
                )
                layer.indices = np.asarray(part.cpu(), dtype=np.int32)
                batch = layer(take_rows(raw, rows))
                values.append(score_rows(ctx.run_raw(batch, rows), rows, ctx.targets))
        return torch.cat(values)
