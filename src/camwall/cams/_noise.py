"""Smoothed and integrated methods of torchcam 0.5: SmoothGradCAM++, SS-CAM and IS-CAM.

Randomness is explicit and per image: image ``i`` of a call draws its noise from its own CPU
generator, seeded from ``(seed, i)`` (:func:`image_generators`), one sample after another. Image
``i``'s noise depends only on the seed, its index ``i`` and the sample number, never on the batch
size, the other images or the chunk size. An explicit noise tensor (``*_noise`` options) replaces
the draws; the parity tests feed torchcam's own draws through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._base import METHODS, CamContext, CamMethod
from camwall.cams._checks import Check, as_given, generator, non_negative, positive_int, seed
from camwall.cams._checks import generator as check_generator
from camwall.cams._checks import seed as check_seed
from camwall.cams._targets import score_rows
from camwall.errors import CamwallError

__all__ = [
    "ISCAM",
    "SSCAM",
    "SmoothGradCAMpp",
    "image_generators",
    "normalized_masks",
]

_MASK64 = (1 << 63) - 1


def _base_seed(seed: Any, generator: Any) -> int:
    """One integer from ``generator`` (a CPU ``torch.Generator``) or ``seed`` (default 0)."""
    if check_generator("generator", generator) is not None:
        return int(torch.randint(0, 1 << 62, (1,), generator=generator))
    return 0 if check_seed("seed", seed) is None else seed


def image_generators(b: int, seed: Any, generator: Any) -> list[torch.Generator]:
    """``b`` CPU generators; the ``i``-th is seeded by a fixed mix of the base seed and ``i``."""
    base = _base_seed(seed, generator)
    gens = []
    for i in range(b):
        mixed = (base * 0x9E3779B97F4A7C15 + (i + 1) * 0xBF58476D1CE4E5B9) & _MASK64
        gens.append(torch.Generator(device="cpu").manual_seed(mixed))
    return gens


def _noise_source(
    opts: dict[str, Any], prefix: str, shape: tuple[int, ...], b: int, n: int, device: Any
) -> Callable[[int, int], Tensor]:
    """``draw(i, m) -> noise`` of image ``i``, sample ``m`` (shape ``shape``, float32).

    From the explicit ``{prefix}_noise`` tensor (n x B x *shape, as torchcam draws it) if
    given; else ``std * N(0, 1)`` from image ``i``'s generator, samples drawn in order.
    """
    given = opts[f"{prefix}_noise"]
    if given is not None:
        if not isinstance(given, Tensor) or tuple(given.shape) != (n, b, *shape):
            got = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
            raise CamwallError(
                f"option {prefix}_noise must be a tensor of shape {(n, b, *shape)} "
                f"(samples x batch x ...), got {got}."
            )
        return lambda i, m: given[m, i].to(device=device, dtype=torch.float32)
    std = float(opts[f"{prefix}_std"])
    gens = image_generators(b, opts["seed"], opts["generator"])
    drawn: dict[int, int] = {}

    def draw(i: int, m: int) -> Tensor:
        if drawn.get(i, 0) != m:
            raise AssertionError("noise samples must be drawn in order")
        drawn[i] = m + 1
        z = torch.randn(shape, generator=gens[i], dtype=torch.float32)
        return (z * std).to(device)

    return draw


def _noise_checks(prefix: str) -> dict[str, Check]:
    """The checks of a noisy method's options (the noise tensor's shape is checked on use)."""
    return {
        f"{prefix}_samples": positive_int,
        f"{prefix}_std": non_negative,
        f"{prefix}_chunk": positive_int,
        f"{prefix}_noise": as_given,
        "seed": seed,
        "generator": generator,
    }


@METHODS.add
class SmoothGradCAMpp(CamMethod, name="smoothgradcampp"):
    """Smooth Grad-CAM++ (Omeiza et al., 2019, https://arxiv.org/abs/1908.01224), as torchcam 0.5.

    For image ``b`` and ``n`` noisy copies ``x_m = x_b + e_m``, ``e_m ~ N(0, std^2)`` (B x C x H x
    W each), with ``G_m = dy_b/dA(x_m)`` (K x h x w)::

        g2 = mean_m G_m^2,  g3 = mean_m G_m^3
        alpha = g2 / (2 g2 + sum_ij(g3 * A(x_b)) + 1e-8)
        w_k = sum_ij alpha_kij * relu(G_n)_kij,   raw map = sum_k w_k A(x_n)_k

    As torchcam 0.5, the final weights use the last sample's gradient ``G_n`` and the map the
    last sample's activation ``A(x_n)`` (its hooks keep the last pass). All ``n * B`` noisy
    inputs go through the model in chunks of ``smoothgradcampp_chunk`` (one forward and one
    backward per chunk). Options: ``smoothgradcampp_samples`` (4), ``smoothgradcampp_std``
    (0.3), ``seed`` / ``generator``, ``smoothgradcampp_noise`` (n x B x C x H x W).
    """

    default = False
    options: ClassVar[dict[str, Any]] = {
        "smoothgradcampp_samples": 4,
        "smoothgradcampp_std": 0.3,
        "smoothgradcampp_chunk": 16,
        "smoothgradcampp_noise": None,
        "seed": None,
        "generator": None,
    }
    checks: ClassVar[dict[str, Check]] = _noise_checks("smoothgradcampp")
    stochastic = True
    chunk_option = "smoothgradcampp_chunk"
    chunk_budget = 2**19  # noisy inputs, each with a forward and a backward pass

    def raw_map(self, ctx: CamContext) -> Tensor:
        n = self.opts["smoothgradcampp_samples"]
        chunk = self.opts["smoothgradcampp_chunk"]
        x = ctx.x
        b = x.shape[0]
        draw = _noise_source(self.opts, "smoothgradcampp", tuple(x.shape[1:]), b, n, x.device)
        jobs = [(i, m) for i in range(b) for m in range(n)]
        a = ctx.activations
        g2, g3 = torch.zeros_like(a), torch.zeros_like(a)
        last_g, last_a = torch.empty_like(a), torch.empty_like(a)
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            noisy = torch.stack([x[i].float() + draw(i, m) for i, m in part]).to(x.dtype)
            owners = [i for i, _ in part]
            sub = ctx.runner.capture(noisy, [ctx.targets[i] for i in owners], True)
            assert sub.gradients is not None
            for row, (i, m) in enumerate(part):  # in sample order, as torchcam's running sums
                g = sub.gradients[row]
                g2[i] += g.pow(2)
                g3[i] += g.pow(3)
                if m == n - 1:
                    last_g[i], last_a[i] = g, sub.activations[row]
        g2, g3 = g2 / n, g3 / n
        alpha = g2 / (2 * g2 + (g3 * a).flatten(2).sum(-1)[:, :, None, None] + 1e-8)
        w = (alpha * last_g.relu()).flatten(2).sum(-1)
        return (w[:, :, None, None] * last_a).sum(dim=1)


def _low_res_masks(a: Tensor) -> Tensor:
    """Per channel ``(A - min) / (max(A - min) + 1e-8)`` over space (B x K x h x w)."""
    shifted = a - a.amin(dim=(2, 3), keepdim=True)
    return shifted / (shifted.amax(dim=(2, 3), keepdim=True) + 1e-8)


def normalized_masks(a: Tensor, size: tuple[int, int]) -> Tensor:
    """torchcam's score masks: per channel ``(A - min) / (max(A - min) + 1e-8)`` over space,
    then bilinear upsampling (``align_corners=False``) to ``size``. B x K x h x w -> B x K x H x W.
    """
    return _upsample(_low_res_masks(a), size)


def _upsample(low: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


class _MaskRows:
    """Rows of :func:`normalized_masks`, a few channels at a time: ``rows(i, ks)`` (n x H x W)
    equals ``normalized_masks(a, size)[i, ks]`` to float32 rounding (bilinear upsampling
    works per channel; the CPU kernel's vectorization over channels may change the last bit),
    without holding the B x K x H x W masks (1.6 GB for resnet50's layer4 at 4 x 224 x 224)."""

    def __init__(self, a: Tensor, size: tuple[int, int]) -> None:
        self.low, self.size = _low_res_masks(a), size

    def rows(self, i: int, ks: list[int]) -> Tensor:
        return _upsample(self.low[i, ks][None], self.size)[0]

    def all_zero(self) -> Tensor:
        """B x K: the constant channels (their mask is zero before and after upsampling)."""
        return ~(self.low.flatten(2) != 0).any(dim=2)


Block = tuple[int, list[int], Tensor]  # (image, channels, their masked inputs n x C x H x W)


def _pieces(channels: list[int], size: int) -> Iterator[list[int]]:
    """``channels`` in consecutive pieces of at most ``size``."""
    for start in range(0, len(channels), size):
        yield channels[start : start + size]


def _score_stream(ctx: CamContext, blocks: Iterator[Block], chunk: int, weight: Tensor) -> None:
    """Forward the masked inputs in chunks of ``chunk`` rows (blocks are joined and split);
    ``weight[i, k] += y_i(row) - y_i(x_i)``.

    Blocks arrive in sample order for each (image, channel), so every running sum adds its
    terms in torchcam's order.
    """
    base = ctx.scores.float()
    k = weight.shape[1]
    inputs: list[Tensor] = []
    where: list[Tensor] = []  # flat (image, channel) index of each row
    owners: list[Tensor] = []
    held = 0

    def flush(n: int) -> None:
        nonlocal inputs, where, owners, held
        batch, flat, own = torch.cat(inputs), torch.cat(where), torch.cat(owners)
        inputs, where, owners = [batch[n:]], [flat[n:]], [own[n:]]
        held -= n
        rows = own[:n].tolist()
        scores = score_rows(ctx.runner.run_model(batch[:n].to(ctx.x.dtype)), rows, ctx.targets)
        # index_add_ adds repeated indices in row order on CPU: torchcam's summation order
        weight.view(-1).index_add_(0, flat[:n], scores - base[rows])

    for i, channels, rows in blocks:
        inputs.append(rows)
        chans = torch.tensor(channels, dtype=torch.long, device=base.device)
        where.append(i * k + chans)
        owners.append(torch.full_like(chans, i))
        held += len(channels)
        while held >= chunk:
            flush(chunk)
    if held:
        flush(held)


@METHODS.add
class SSCAM(CamMethod, name="sscam"):
    """SS-CAM (Wang et al., 2020, https://arxiv.org/abs/2006.14255), as torchcam 0.5.

    ``M = normalized_masks(A)`` (B x K x H x W); for ``n`` samples ``e_m ~ N(0, std^2)`` of shape
    K x H x W per image: ``s_bkm = y_b(x_b * (M_bk + e_bkm)) - y_b(x_b)``;
    ``w_b = softmax_k(mean_m s_bkm)``; map ``= sum_k w_bk A_bk``. Masked inputs go through the
    model in chunks of ``sscam_chunk`` (mixing channels, samples and images); each mask is
    upsampled when its row is built (:class:`_MaskRows`), never all B x K x H x W. Options:
    ``sscam_samples`` (35), ``sscam_std`` (2.0), ``seed`` / ``generator``, ``sscam_noise``
    (n x B x K x H x W).
    """

    default = False
    options: ClassVar[dict[str, Any]] = {
        "sscam_samples": 35,
        "sscam_std": 2.0,
        "sscam_chunk": 32,
        "sscam_noise": None,
        "seed": None,
        "generator": None,
    }
    checks: ClassVar[dict[str, Check]] = _noise_checks("sscam")
    stochastic = True
    chunk_option = "sscam_chunk"
    chunk_budget = 2**20  # masked inputs, forward only (as scorecam)

    def weights(self, ctx: CamContext) -> Tensor:
        n = self.opts["sscam_samples"]
        chunk = self.opts["sscam_chunk"]
        a, x = ctx.activations, ctx.x
        b, k = a.shape[:2]
        masks = _MaskRows(a, ctx.input_size)
        draw = _noise_source(self.opts, "sscam", (k, *ctx.input_size), b, n, x.device)

        def blocks() -> Iterator[Block]:
            for i in range(b):
                xi = x[i].float()
                for m in range(n):
                    noise = draw(i, m)  # K x H x W, drawn at once (the generator's order)
                    for ks in _pieces(list(range(k)), chunk):
                        noisy = masks.rows(i, ks) + noise[ks]  # n x H x W
                        yield i, ks, noisy[:, None] * xi

        weight = torch.zeros(b, k, dtype=torch.float32, device=a.device)
        _score_stream(ctx, blocks(), chunk, weight)
        return torch.softmax(weight / n, dim=1)


@METHODS.add
class ISCAM(CamMethod, name="iscam"):
    """IS-CAM (Naidu et al., 2020, https://arxiv.org/abs/2010.03023), as torchcam 0.5.

    ``M = normalized_masks(A)``; coefficients ``c_m = sum_{t=1}^{m} t / n`` (m = 1..n, torchcam's
    running sum); ``s_bkm = y_b(c_m (M_bk x_b)) - y_b(x_b)``; ``w_b = softmax_k(mean_m s_bkm)``;
    map ``= sum_k w_bk A_bk``. Deterministic (no noise). A constant channel gives the all-zero
    mask, hence the zero input for every ``m``: it is scored once per call. Options:
    ``iscam_samples`` (10), ``iscam_chunk`` (32).
    """

    default = False
    options: ClassVar[dict[str, Any]] = {"iscam_samples": 10, "iscam_chunk": 32}
    checks: ClassVar[dict[str, Check]] = {
        "iscam_samples": positive_int,
        "iscam_chunk": positive_int,
    }
    chunk_option = "iscam_chunk"
    chunk_budget = 2**20  # masked inputs, forward only (as scorecam)

    def weights(self, ctx: CamContext) -> Tensor:
        n = self.opts["iscam_samples"]
        chunk = self.opts["iscam_chunk"]
        a, x = ctx.activations, ctx.x
        b, k = a.shape[:2]
        masks = _MaskRows(a, ctx.input_size)
        zero = masks.all_zero()
        coeffs, c = [], 0.0
        for m in range(n):
            c += (m + 1) / n
            coeffs.append(c)

        def blocks() -> Iterator[Block]:
            for i in range(b):
                xi = x[i].float()
                live = (~zero[i]).nonzero()[:, 0].tolist()
                for m in range(n):
                    for ks in _pieces(live, chunk):
                        yield i, ks, coeffs[m] * (masks.rows(i, ks)[:, None] * xi)

        weight = torch.zeros(b, k, dtype=torch.float32, device=a.device)
        _score_stream(ctx, blocks(), chunk, weight)
        if bool(zero.any()):
            logits = ctx.runner.run_model(torch.zeros_like(x[:1]))
            s0 = score_rows(logits.expand(b, *logits.shape[1:]), range(b), ctx.targets)
            delta = (s0 - ctx.scores.float())[:, None].expand(b, k)
            for _ in range(n):
                weight = torch.where(zero, weight + delta, weight)
        return torch.softmax(weight / n, dim=1)
