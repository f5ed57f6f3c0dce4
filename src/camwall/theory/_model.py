"""The simple CNN of the paper's Section 2: one valid convolution, ReLU, max-pool 2x2, a head.

Layout (``N x C x H x W`` input, ``V`` filters of size ``k x k``)::

    A = conv(x)            N x V x h x w       h = H - k + 1, w = W - k + 1   (valid, no bias)
    B = ReLU(A)            N x V x h x w       the activation maps GradCAM explains
    M = MaxPool2x2(B)      N x V x h' x w'     h' = h // 2, w' = w // 2
    z_1 = W_1 vec(M)       then ReLU, W_2, ..., ReLU, W_L            (no biases)

The *wall* is the library's: the head's first layer is a :class:`camwall.walls.WalledLinear`
whose weights reading the walled pooled rows ``p`` (by default ``p >= h'/2``, the bottom half)
are 0 and stay 0, and the dead input rows come from :func:`camwall.walls.dead_zone`. With
``L = 1``, ``k = 2`` and a 29 x 29 input this is the registered ``simple-cnn`` model
(:func:`camwall.walls.simple_cnn`), with named layers instead of indices.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.walls import WalledLinear, WallSpec, dead_zone, enforce_walls

__all__ = ["SimpleCNN", "conv_output_size", "default_wall_rows", "wall_spec"]


def conv_output_size(input_size: tuple[int, int], kernel_size: int) -> tuple[int, int, int, int]:
    """Sizes ``(h, w, h', w')`` of the activation and pooled maps for an ``H x W`` input.

    ``h = H - k + 1`` (valid convolution) and ``h' = h // 2`` (max-pool 2x2, stride 2, floor).

    Raises:
        CamwallError: if the pooled map would be empty.
    """
    height, width = input_size
    h, w = height - kernel_size + 1, width - kernel_size + 1
    if kernel_size < 1 or h < 2 or w < 2:
        raise CamwallError(
            f"input size {height}x{width} with kernel_size={kernel_size} leaves a "
            f"{max(h, 0)}x{max(w, 0)} activation map; the max-pool 2x2 needs at least 2x2. "
            "Use a larger image or a smaller --kernel-size."
        )
    return h, w, h // 2, w // 2


def default_wall_rows(pooled_height: int) -> tuple[int, ...]:
    """The paper's wall: every pooled row ``p >= h'/2`` (the bottom half, rounded down)."""
    return tuple(p for p in range(pooled_height) if 2 * p >= pooled_height)


def wall_spec(wall_rows: Sequence[int], pooled_height: int) -> WallSpec:
    """The :class:`~camwall.walls.WallSpec` of walled pooled rows (one contiguous run).

    ``(a, ..., b)`` becomes ``WallSpec(rows=(a, b + 1))``, or ``rows=(a, None)`` when ``b`` is
    the last pooled row (the form of the registered ``simple-cnn``).

    Raises:
        CamwallError: rows outside ``0..h'-1``, no rows, or rows with a gap.
    """
    rows = sorted({int(p) for p in wall_rows})
    bad = [p for p in rows if not 0 <= p < pooled_height]
    if bad:
        raise CamwallError(
            f"wall_rows {bad} are outside the {pooled_height} pooled rows (0..{pooled_height - 1})."
        )
    if not rows:
        raise CamwallError("wall_rows is empty; give at least one row, or walled=False.")
    if rows != list(range(rows[0], rows[-1] + 1)):
        raise CamwallError(
            f"wall_rows {tuple(rows)} have a gap; a wall is one run of pooled rows, "
            f"e.g. {tuple(range(rows[0], rows[-1] + 1))}."
        )
    stop = None if rows[-1] == pooled_height - 1 else rows[-1] + 1
    return WallSpec(rows=(rows[0], stop))


def _check_widths(filters: int, hidden: Sequence[int], outputs: int) -> None:
    if filters < 1 or outputs < 1 or any(d < 1 for d in hidden):
        raise CamwallError(
            f"filters={filters}, hidden={tuple(hidden)}, outputs={outputs}: "
            "every width must be >= 1."
        )


def _head(
    feature_shape: tuple[int, int, int], hidden: Sequence[int], outputs: int, wall: WallSpec | None
) -> nn.Sequential:
    """``W_1`` (a :class:`WalledLinear` when walled), then ReLU and ``W_l`` for each width."""
    c, hp, wp = feature_shape
    widths = [c * hp * wp, *hidden, outputs]
    first: nn.Linear
    if wall is None:
        first = nn.Linear(widths[0], widths[1], bias=False)
    else:
        first = WalledLinear(
            widths[0], widths[1], bias=False, feature_shape=feature_shape, wall=wall
        )
    layers: list[nn.Module] = [first]
    for d_in, d_out in itertools.pairwise(widths[1:]):
        layers += [nn.ReLU(), nn.Linear(d_in, d_out, bias=False)]
    return nn.Sequential(*layers)


class SimpleCNN(nn.Sequential):
    """The simple CNN of the theory, with or without the wall, for any ``L >= 1``.

    A plain ``nn.Sequential`` of ``conv, relu, pool, flatten, head`` (``nn.Conv2d`` without
    bias, ``nn.ReLU``, ``nn.MaxPool2d(2)``, ``nn.Flatten``, and the head: a
    :class:`~camwall.walls.WalledLinear` ``W_1`` when walled, then ``ReLU, W_l``), so that
    hook-based CAM code can target ``"relu"``: its output is ``B``.

    Args:
        filters: number of filters ``V``.
        kernel_size: filter size ``k`` (square).
        input_size: ``(H, W)`` of the input images.
        hidden: widths of the ``L - 1`` hidden layers of the head (empty for ``L = 1``).
        outputs: number of outputs of the last layer.
        walled: whether the head's first layer is walled.
        wall_rows: pooled rows the head never reads, one contiguous run; default
            :func:`default_wall_rows`.
        in_channels: input channels (1 for grayscale).
    """

    conv: nn.Conv2d
    relu: nn.ReLU
    pool: nn.MaxPool2d
    flatten: nn.Flatten
    head: nn.Sequential

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        input_size: tuple[int, int],
        *,
        hidden: Sequence[int] = (),
        outputs: int = 1,
        walled: bool = True,
        wall_rows: Sequence[int] | None = None,
        in_channels: int = 1,
    ) -> None:
        _check_widths(filters, hidden, outputs)
        h, w, hp, wp = conv_output_size(input_size, kernel_size)
        if not walled and wall_rows is not None:
            raise CamwallError("wall_rows was given with walled=False; drop one of them.")
        wall = None
        if walled:
            wall = wall_spec(default_wall_rows(hp) if wall_rows is None else wall_rows, hp)
        layers = OrderedDict(
            conv=nn.Conv2d(in_channels, filters, kernel_size, bias=False),
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            head=_head((filters, hp, wp), hidden, outputs, wall),
        )
        super().__init__(layers)
        self.filters, self.kernel_size = filters, kernel_size
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.activation_size, self.pooled_size = (h, w), (hp, wp)
        self.walled = walled

    def __getitem__(self, idx: slice | int) -> nn.Module:  # type: ignore[override]
        """Layer ``idx``; a slice is a plain ``nn.Sequential`` of those layers (not a model)."""
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    @property
    def wall(self) -> WallSpec | None:
        """The wall of the head's first layer, in pooled-map coordinates (``None`` if unwalled)."""
        first = self.head[0]
        return first.wall if isinstance(first, WalledLinear) else None

    @property
    def live_rows(self) -> Tensor:
        """Bool ``h'``: ``False`` on walled pooled rows (all ``True`` if unwalled)."""
        hp, wp = self.pooled_size
        if self.wall is None:
            return torch.ones(hp, dtype=torch.bool)
        return ~self.wall.blocked(hp, wp)[:, 0]

    @property
    def depth(self) -> int:
        """``L``: the number of Linear layers in the head."""
        return len(self.linear_layers())

    @property
    def wall_rows(self) -> tuple[int, ...]:
        """Walled pooled rows (empty when unwalled)."""
        return tuple(int(p) for p in torch.nonzero(~self.live_rows).flatten())

    def linear_layers(self) -> list[nn.Linear]:
        """The head's Linear layers ``W_1, ..., W_L`` in order."""
        return [m for m in self.head if isinstance(m, nn.Linear)]

    def head_weights(self) -> list[Tensor]:
        """The head's weights as applied, ``W_l`` of shape ``d_l x d_{l-1}``.

        ``W_1`` is the weight times the wall's ``keep`` mask, so it has zeros on the wall even
        after an update that ignored it (a :class:`WalledLinear` also zeroes those inputs).
        """
        out: list[Tensor] = []
        for layer in self.linear_layers():
            if isinstance(layer, WalledLinear):
                out.append(layer.weight * layer.keep.to(layer.weight.dtype))
            else:
                out.append(layer.weight)
        return out

    @torch.no_grad()
    def reset_gaussian_(self, tau: float = 1.0, generator: torch.Generator | None = None) -> None:
        """Draw every filter and head weight i.i.d. ``N(0, tau^2)``; re-zero the wall."""
        for param in (self.conv.weight, *(m.weight for m in self.linear_layers())):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(noise.to(param.device) * tau)
        enforce_walls(self)

    def activations(self, x: Tensor) -> Tensor:
        """``B = ReLU(conv(x))``, ``N x V x h x w``."""
        return self.relu(self.conv(x))

    def head_forward(self, b: Tensor) -> Tensor:
        """The output ``y`` (``N x outputs``) from the activation maps ``B``."""
        return self.head(self.flatten(self.pool(b)))

    def dead_input_rows(self) -> tuple[int, ...]:
        """Input rows that no output depends on, from :func:`camwall.walls.dead_zone`.

        The dead zone is structural (pooled row ``p`` reads activation rows ``2p, 2p + 1``,
        activation row ``i`` reads input rows ``i .. i + k - 1``); a row is dead when every
        pixel of it is.
        """
        zone = dead_zone(self, (self.conv.in_channels, *self.input_size))
        return tuple(int(r) for r in torch.nonzero(zone.all(dim=1)).flatten())

    def extra_repr(self) -> str:
        return (
            f"V={self.filters}, k={self.kernel_size}, input={self.input_size}, "
            f"L={self.depth}, wall_rows={self.wall_rows}"
        )
