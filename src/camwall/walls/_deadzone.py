"""Exact dead zones, computed from the structure of a model, and their verification.

``dead_zone(model, (C, H, W))`` answers: which input pixels influence no output, whatever the
(trained) weights and whichever ReLUs are on? It runs the model's own forward code on a
*structural surrogate*: every leaf layer is replaced, for the duration of the call, by a
linear map with strictly positive weights on exactly the connections the layer has:

* ``Conv2d``: all-ones kernel (same size, stride, padding, dilation, groups, padding mode);
* ``MaxPool2d``: average pool of the same window; ``AdaptiveMaxPool2d``: adaptive average;
* ``Linear``: positive weights where the weight is non-zero (a :class:`WalledLinear` uses its
  wall instead, so only the wall's structural zeros count); for matrices above 2^24 entries, a
  row-by-column pattern (a superset of the connections, so never a false dead pixel);
* BatchNorm (eval: a per-channel affine map), dropout, stochastic depth (torchvision's
  ``StochasticDepth``, timm's ``DropPath``), timm's ``LayerScale`` (a per-channel factor) and
  elementwise activations: identity; GroupNorm / LayerNorm: every output reads its whole
  normalised group (their mean, scaled to at most 1, so that values do not grow with the
  width and depth of a transformer);
* ``Softmax`` / ``LogSoftmax``: every output along ``dim`` reads every input along ``dim``;
* a layer with a ``camwall_structural(x)`` method (the walled ViT's token and masked-softmax
  layers) states its own connections with it;
* average pools, padding, Flatten, torchvision's ``Permute``, :class:`Wall` and the model's
  own adds / reshapes / concats run unchanged;
* a container that uses its own parameters is refused, unless it names them in a
  ``camwall_constants`` attribute: parameters its forward only concatenates to, adds to or
  multiplies with the data (a ViT's class, register and position tokens, see
  :func:`~camwall.walls.wall_vit`); they are ones for the structural forward.

With the all-ones input, every value is positive exactly where it depends on some input, so
ReLUs called as functions pass it, and the gradient of the summed outputs is positive exactly
on the pixels that have a path to an output. Gradients are reset to 0/1 after every layer, so
nothing underflows in deep nets. A pixel is dead when its gradient is 0 in every channel.

**What the proof assumes.** It is about the one forward it traces (all-ones input): the
model's leaf modules, replaced as above, and the tensor operations its own code runs on that
call. It holds for every input only when the forward takes the same path for every input: no
branch on tensor values (``if x.mean() > t``, ``.item()``, data-dependent indexing) and no
layer changed after the call. A model that reads the dead rows only when ``f.mean() > 1e9``
is certified by the trace; :func:`~camwall.walls.verify_wall` (in ``_verify``) tries extreme
values in the dead zone and watches each forward for such paths.

Dead zones are defined for **eval-mode** models: a BatchNorm layer in train mode normalises
with statistics over all positions, so every pixel reaches the output and no wall holds.
``dead_zone`` and ``verify_wall`` switch the model to eval mode and restore every module's
mode afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from camwall.errors import CamwallError
from camwall.walls._modules import Wall, WalledLinear

__all__ = ["dead_zone", "dead_zone_summary", "dead_zones"]

Target = int | Sequence[int] | None
"""Which outputs a dead zone is for: one output index, several (the pixels none of them sees),
or ``None`` for all outputs."""

_IDENTITY_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.LogSigmoid,
    nn.Identity,
)
"""Layers that map each value to one value (BatchNorm in eval mode is per-channel affine)."""

_IDENTITY_NAMES = frozenset({"StochasticDepth", "DropPath", "LayerScale"})
"""Identity by class name: torchvision's ``StochasticDepth`` and timm's ``DropPath`` (the
identity in eval mode), timm's ``LayerScale`` (``x * gamma``, one factor per channel)."""

_ELEMENTWISE_MODULES = frozenset({"timm.layers.activations"})
"""Modules whose layers are all elementwise activations (timm's own ``GELU``, ``Swish``,
``Mish``, ``HardSwish``, ``PReLU``, ...): the identity, as torch's."""

_UNCHANGED_TYPES: tuple[type[nn.Module], ...] = (
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    Wall,
)
"""Layers whose own forward already has positive weights on exactly its connections."""

_BLOCKED_FUNCTIONS = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "bilinear",
        "batch_norm",
        "layer_norm",
        "group_norm",
        "instance_norm",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
        "max",
        "min",
        "amax",
        "amin",
        "topk",
        "sort",
        "median",
        "kthvalue",
        "embedding",
    }
)
"""Functions that, called in a model's own forward code, would hide or misstate dependence."""

_FULL_PATTERN_LIMIT = 1 << 24


def _binarize(grad: Tensor) -> Tensor:
    return (grad != 0).to(grad.dtype)


def _positive(out: Tensor) -> Tensor:
    if out.requires_grad:
        out.register_hook(_binarize)
    return out


def _conv(m: nn.Conv2d) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        g = m.groups
        cin = m.in_channels // g
        kh, kw = m.kernel_size
        # All output channels of a group are equal: compute one per group, then repeat.
        weight = torch.full((g, cin, kh, kw), 1.0 / (cin * kh * kw), dtype=x.dtype, device=x.device)
        padding: Any = m.padding
        if m.padding_mode != "zeros":
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            padding = 0
        y = F.conv2d(x, weight, None, m.stride, padding, m.dilation, g)
        return _positive(y.repeat_interleave(m.out_channels // g, dim=1))

    return forward


def _linear(m: nn.Linear) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        if isinstance(m, WalledLinear) and m.per_output:  # group g reads its own cells
            keep = m.group_keep.to(x.dtype)
            y = (x.unsqueeze(-2) * keep).sum(-1) / m.in_features
            size = m.out_features // len(m.walls)
            return _positive(y.repeat_interleave(size, dim=-1))
        if isinstance(m, WalledLinear):
            keep = m.keep.to(x.dtype)
            y = (x * keep).sum(-1, keepdim=True) / m.in_features
            return _positive(y.expand(*x.shape[:-1], m.out_features))
        nonzero = m.weight.detach() != 0
        if nonzero.numel() <= _FULL_PATTERN_LIMIT:
            pattern = nonzero.to(x.dtype) / m.in_features
        else:  # rows x columns: a superset of the connections, without a huge temporary
            rows = nonzero.any(1).to(x.dtype)
            cols = nonzero.any(0).to(x.dtype) / m.in_features
            return _positive((x @ cols).unsqueeze(-1) * rows)
        return _positive(F.linear(x, pattern))

    return forward


def _max_pool(m: nn.MaxPool2d) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        if m.dilation not in (1, (1, 1)):
            raise CamwallError(
                f"dead_zone cannot analyze a MaxPool2d with dilation {m.dilation}; use dilation 1."
            )
        y = F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, m.ceil_mode, count_include_pad=True)
        return _positive(y)

    return forward


def _adaptive_max_pool(m: nn.AdaptiveMaxPool2d) -> Callable[[Tensor], Tensor]:
    return lambda x: _positive(F.adaptive_avg_pool2d(x, m.output_size))


def _softmax(m: nn.Softmax | nn.LogSoftmax) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        if m.dim is None:
            raise CamwallError("dead_zone cannot analyze a Softmax without dim; set dim.")
        return _positive(x.sum(m.dim, keepdim=True).expand_as(x))

    return forward


def _at_most_one(mean: Tensor) -> Tensor:
    """``mean / max(mean, 1)`` (detached denominator): positive where ``mean`` is, with a
    positive gradient, and at most 1, as a normalised value is."""
    return mean / mean.detach().clamp_min(1.0)


def _norm(m: nn.Module) -> Callable[[Tensor], Tensor]:
    """Normalisation layers: every output reads every input of its normalised group."""

    def forward(x: Tensor) -> Tensor:
        if isinstance(m, nn.GroupNorm):
            g = x.reshape(x.shape[0], m.num_groups, -1)
            return _positive(_at_most_one(g.mean(-1, keepdim=True)).expand_as(g).reshape(x.shape))
        if type(m).__name__ == "LayerNorm2d":  # torchvision: LayerNorm over C of N x C x H x W
            return _positive(_at_most_one(x.mean(1, keepdim=True)).expand_as(x))
        assert isinstance(m, nn.LayerNorm)
        dims = tuple(range(-len(m.normalized_shape), 0))
        return _positive(_at_most_one(x.mean(dims, keepdim=True)).expand_as(x))

    return forward


def _is_permute(m: nn.Module) -> bool:
    """torchvision's ``Permute`` layer (Swin): a reordering of axes, run unchanged."""
    return type(m).__name__ == "Permute" and type(m).__module__ == "torchvision.ops.misc"


def _surrogate(name: str, m: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The structural forward for leaf ``m``, or None to run its own forward."""
    own = getattr(m, "camwall_structural", None)  # a layer that states its own connections
    if callable(own):
        return lambda x: _positive(own(x))
    if isinstance(m, _UNCHANGED_TYPES) or _is_permute(m):
        return None
    if isinstance(m, _IDENTITY_TYPES) or type(m).__name__ in _IDENTITY_NAMES:
        return lambda x: x
    if type(m).__module__ in _ELEMENTWISE_MODULES:
        return lambda x: x
    if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
        return _norm(m)
    if isinstance(m, nn.Conv2d):
        return _conv(m)
    if isinstance(m, nn.Linear):
        return _linear(m)
    if isinstance(m, nn.MaxPool2d):
        return _max_pool(m)
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return _adaptive_max_pool(m)
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return _softmax(m)
    raise CamwallError(
        f"dead_zone cannot analyze layer {name or '<model>'!r} of type {type(m).__name__}. "
        "Supported: Conv2d, Linear (and WalledLinear), max/avg/adaptive pools, BatchNorm "
        "(eval), GroupNorm, LayerNorm, dropout, stochastic depth, elementwise activations, "
        "Softmax, padding, Flatten, Wall, and "
        "containers whose forward adds, concatenates or reshapes."
    )


class _Guard(TorchFunctionMode):
    """Refuse functions that would misstate dependence when a model's forward calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Any = (),
        kwargs: Any = None,
    ) -> Any:
        name = getattr(func, "__name__", "")
        if self.depth == 0 and name in _BLOCKED_FUNCTIONS:
            raise CamwallError(
                f"dead_zone cannot analyze the functional call {name!r} in a model's forward "
                "code; use the equivalent nn module (e.g. nn.MaxPool2d) so it can be replaced."
            )
        return func(*args, **(kwargs or {}))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` locked and in eval mode inside, its modes restored after (flags untouched)."""
    from camwall.modelstate import held

    with held(model, freeze=False):
        yield


@contextmanager
def _structural(model: nn.Module, guard: _Guard) -> Iterator[None]:
    patched: list[tuple[nn.Module, bool, Any]] = []
    constants: list[tuple[nn.Module, str, Any]] = []
    try:
        for name, m in model.named_modules():
            if len(m._modules) > 0:
                constants += _constants(name, m)
                continue
            fn = _surrogate(name, m)
            if fn is None:
                continue

            def wrapped(x: Tensor, _fn: Callable[[Tensor], Tensor] = fn) -> Tensor:
                guard.depth += 1
                try:
                    return _fn(x)
                finally:
                    guard.depth -= 1

            patched.append((m, "forward" in m.__dict__, m.__dict__.get("forward")))
            m.forward = wrapped
        yield
    finally:
        for m, had, old in patched:
            if had:
                m.forward = old
            else:
                del m.forward
        for m, key, param in constants:
            m._parameters[key] = param


def _constants(name: str, m: nn.Module) -> list[tuple[nn.Module, str, Any]]:
    """Set the own parameters of container ``m`` to ones for the structural forward, when
    ``m.camwall_constants`` names them all (see the module docstring); returns what to
    restore. Any other own parameter is refused."""
    own = [n for n, _ in m.named_parameters(recurse=False)]
    declared = set(getattr(m, "camwall_constants", ()))
    if [n for n in own if n not in declared]:
        raise CamwallError(
            f"dead_zone cannot analyze {name or '<model>'!r} "
            f"({type(m).__name__}): it uses its own parameters {own} in its forward "
            "code; move them into a layer module."
        )
    saved = []
    for key in own:
        param = m._parameters[key]
        assert param is not None
        saved.append((m, key, param))
        m._parameters[key] = nn.Parameter(torch.ones_like(param), requires_grad=False)
    return saved


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise CamwallError(
            f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}."
        )
    return shape[0], shape[1], shape[2]


def _logits(out: object) -> Tensor:
    from camwall._outputs import logits_of

    out = logits_of(out)  # a HuggingFace-style output or a tuple: its logits
    if not isinstance(out, Tensor):
        raise CamwallError(
            f"the model returns a {type(out).__name__}, not a tensor of logits; wrap it so that "
            "forward returns one tensor."
        )
    return out


def _outputs(target: Target, count: int) -> list[int] | None:
    """``target`` as a list of output indices in ``[0, count)`` (``None``: all outputs)."""
    if target is None:
        return None
    items: list[Any] = [target] if isinstance(target, int) else list(target)
    bad = [t for t in items if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < count]
    if not items or bad:
        raise CamwallError(
            f"target {target!r} is not an output index of this model (0 .. {count - 1}); give "
            "one index, a list of indices, or None for all outputs."
        )
    return items


def _structural_grads(
    model: nn.Module, input_shape: tuple[int, ...], targets: Sequence[Target]
) -> list[Tensor]:
    """One structural forward at ``(C, H, W)``; for each target, the bool ``[H, W]`` of the
    pixels with no path to any of its outputs (see the module docstring)."""
    c, h, w = _check_shape(input_shape)
    x = torch.ones(1, c, h, w, device=_device(model), requires_grad=True)
    guard = _Guard()
    zones: list[Tensor] = []
    with torch.enable_grad(), _eval_mode(model), _structural(model, guard):
        with guard:
            try:
                out = _logits(model(x)).reshape(-1)
            except RuntimeError as err:
                raise CamwallError(
                    f"the model cannot run on an input of shape {(c, h, w)}: {err}"
                ) from None
        for k, target in enumerate(targets):
            picked = _outputs(target, out.numel())
            chosen = out if picked is None else out[picked]
            (grad,) = torch.autograd.grad(
                chosen.sum(), x, allow_unused=True, retain_graph=k + 1 < len(targets)
            )
            if grad is None:
                zones.append(torch.ones(h, w, dtype=torch.bool, device=x.device))
            else:
                zones.append((grad[0] == 0).all(0))
    return zones


def dead_zone(model: nn.Module, input_shape: tuple[int, ...], target: Target = None) -> Tensor:
    """The pixels of a ``C x H x W`` input that influence no output of ``model`` (eval mode).

    Structural and exact: pixel ``(h, w)`` is dead iff no path of non-zero connections leads
    from any channel of it to any output, with every conv/linear weight counted as a connection
    except the structural zeros of a wall (see the module docstring). It does not depend on the
    weight values or on which ReLUs are on; a dead pixel is dead for every input, provided
    the forward takes the traced path for every input (no branch on tensor values, see the
    module docstring; :func:`~camwall.walls.verify_wall` checks extreme values for it).

    Args:
        model: the network; put in eval mode for the call and restored afterwards.
        input_shape: ``(C, H, W)``.
        target: ``None`` (all outputs: the pixels *no* output sees), an output index ``k``
            (the pixels that cannot change ``logits[:, k]``, exact per output: a per-output
            wall gives each output its own dead zone), or a list of indices.

    Returns:
        Bool ``[H, W]`` on the model's device, True where the pixel is dead.

    Raises:
        CamwallError: a layer type or functional call it cannot analyze; a model that does not
        return a tensor; a bad ``input_shape`` or ``target``.
    """
    return _structural_grads(model, input_shape, [target])[0]


def dead_zones(
    model: nn.Module, input_shape: tuple[int, ...], targets: Sequence[Target] | None = None
) -> Tensor:
    """Several dead zones from one structural forward: bool ``[len(targets), H, W]``, row ``j``
    = ``dead_zone(model, input_shape, targets[j])``; by default one per output (``[K, H, W]``,
    row ``k`` for output ``k``)."""
    c, h, w = _check_shape(input_shape)
    if targets is None:
        targets = list(range(_output_count(model, (c, h, w))))
    return torch.stack(_structural_grads(model, (c, h, w), list(targets)))


def _output_count(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Number of outputs (logits per image) of ``model`` at input ``shape``."""
    x = torch.zeros(1, *shape, device=_device(model))
    with torch.no_grad(), _eval_mode(model):
        return int(_logits(model(x)).reshape(-1).numel())


def _ranges(flags: Tensor) -> list[list[int]]:
    """Half-open ``[start, stop)`` runs of True in a 1-D bool tensor."""
    out: list[list[int]] = []
    start = None
    for i, v in enumerate(flags.tolist()):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append([start, i])
            start = None
    if start is not None:
        out.append([start, len(flags)])
    return out


def dead_zone_summary(zone: Tensor) -> dict[str, Any]:
    """JSON-ready description of a bool ``[H, W]`` dead zone.

    Returns:
        ``{"shape": [H, W], "rows": [[start, stop), ...] of fully dead rows, "cols": the same
        for columns, "pixels": dead pixel count, "fraction": pixels / (H * W)}``.
    """
    z = zone.detach().to("cpu", torch.bool)
    h, w = z.shape
    pixels = int(z.sum())
    return {
        "shape": [h, w],
        "rows": _ranges(z.all(1)),
        "cols": _ranges(z.all(0)),
        "pixels": pixels,
        "fraction": pixels / (h * w),
    }
