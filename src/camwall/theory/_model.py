"""The simple CNN of the paper's Section 2: one valid convolution, ReLU, max-pool 2x2, a head.

Layout (``N x C x H x W`` input, ``V`` filters of size ``k x k``)::

    A = conv(x)            N x V x h x w       h = H - k + 1, w = W - k + 1   (valid, no bias)
    B = ReLU(A)            N x V x h x w       the activation maps GradCAM explains
    M = MaxPool2x2(B)      N x V x h' x w'     h' = h // 2, w' = w // 2
    z_1 = W_1 vec(M)       then ReLU, W_2, ..., ReLU, W_L            (no biases)

The *wall* sets to zero every weight of the head's first layer that reads a walled pooled row
``p`` (by default ``p >= h'/2``, the bottom half), and keeps it at zero: the first layer is a
:class:`MaskedLinear` that multiplies its weight by the mask in every forward pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camwall.errors import CamwallError

__all__ = ["MaskedLinear", "SimpleCNN", "conv_output_size", "default_wall_rows"]


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


class MaskedLinear(nn.Linear):
    """``nn.Linear`` without bias whose weight is multiplied by a fixed 0/1 mask in every call.

    Args:
        in_features: length of the flattened input.
        out_features: number of outputs.
        mask: bool tensor ``in_features``; ``False`` marks inputs the layer never reads.
    """

    mask: Tensor

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features, bias=False)
        if mask.shape != (in_features,):
            raise CamwallError(f"mask has shape {tuple(mask.shape)}; expected ({in_features},)")
        self.register_buffer("mask", mask.to(torch.bool))
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Set the masked weights to exactly zero (call after changing ``weight`` in place)."""
        self.weight.mul_(self.mask.to(self.weight.dtype))

    def effective_weight(self) -> Tensor:
        """``weight * mask``: the weight the layer actually applies, ``out x in``."""
        return self.weight * self.mask.to(self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight())


class SimpleCNN(nn.Module):
    """The simple CNN of the theory, with or without the wall, for any ``L >= 1``.

    Sub-modules are called in order ``conv, relu, pool, flatten, head`` so that hook-based CAM
    code can target ``"relu"``: its output is ``B``.

    Args:
        filters: number of filters ``V``.
        kernel_size: filter size ``k`` (square).
        input_size: ``(H, W)`` of the input images.
        hidden: widths of the ``L - 1`` hidden layers of the head (empty for ``L = 1``).
        outputs: number of outputs of the last layer.
        walled: whether the head's first layer is masked.
        wall_rows: pooled rows the head never reads; default :func:`default_wall_rows`.
        in_channels: input channels (1 for grayscale).

    Attributes:
        live_rows: bool ``h'``; ``False`` on walled pooled rows (all ``True`` if unwalled).
    """

    live_rows: Tensor

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
        super().__init__()
        if filters < 1 or outputs < 1 or any(d < 1 for d in hidden):
            raise CamwallError(
                f"filters={filters}, hidden={tuple(hidden)}, outputs={outputs}: "
                "every width must be >= 1."
            )
        h, w, hp, wp = conv_output_size(input_size, kernel_size)
        self.filters, self.kernel_size = filters, kernel_size
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.activation_size, self.pooled_size = (h, w), (hp, wp)
        live = torch.ones(hp, dtype=torch.bool)
        if walled:
            rows = default_wall_rows(hp) if wall_rows is None else tuple(wall_rows)
            bad = [p for p in rows if not 0 <= p < hp]
            if bad:
                raise CamwallError(
                    f"wall_rows {bad} are outside the {hp} pooled rows (0..{hp - 1})."
                )
            live[list(rows)] = False
        elif wall_rows is not None:
            raise CamwallError("wall_rows was given with walled=False; drop one of them.")
        self.register_buffer("live_rows", live)
        self.walled = walled
        self.conv = nn.Conv2d(in_channels, filters, kernel_size, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        widths = [filters * hp * wp, *hidden, outputs]
        mask = live[None, :, None].expand(filters, hp, wp).reshape(-1)
        layers: list[nn.Module] = [MaskedLinear(widths[0], widths[1], mask)]
        for d_in, d_out in itertools.pairwise(widths[1:]):
            layers += [nn.ReLU(), nn.Linear(d_in, d_out, bias=False)]
        self.head = nn.Sequential(*layers)

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
        """The head's weights as applied (``W_1`` masked), ``W_l`` of shape ``d_l x d_{l-1}``."""
        out: list[Tensor] = []
        for layer in self.linear_layers():
            weight = layer.effective_weight() if isinstance(layer, MaskedLinear) else layer.weight
            out.append(weight)
        return out

    @torch.no_grad()
    def reset_gaussian_(self, tau: float = 1.0, generator: torch.Generator | None = None) -> None:
        """Draw every filter and head weight i.i.d. ``N(0, tau^2)``; re-zero the wall."""
        for param in (self.conv.weight, *(m.weight for m in self.linear_layers())):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(noise.to(param.device) * tau)
        first = self.linear_layers()[0]
        assert isinstance(first, MaskedLinear)
        first.apply_mask_()

    def activations(self, x: Tensor) -> Tensor:
        """``B = ReLU(conv(x))``, ``N x V x h x w``."""
        return self.relu(self.conv(x))

    def head_forward(self, b: Tensor) -> Tensor:
        """The output ``y`` (``N x outputs``) from the activation maps ``B``."""
        return self.head(self.flatten(self.pool(b)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head_forward(self.activations(x))

    def dead_input_rows(self) -> tuple[int, ...]:
        """Input rows that no live pooled row reads, derived from the structure.

        Pooled row ``p`` reads activation rows ``2p, 2p + 1``; activation row ``i`` reads input
        rows ``i .. i + k - 1``. An input row is dead when no live pooled row reaches it.
        """
        height = self.input_size[0]
        seen = [False] * height
        for p in range(self.pooled_size[0]):
            if bool(self.live_rows[p]):
                for i in (2 * p, 2 * p + 1):
                    for r in range(i, i + self.kernel_size):
                        seen[r] = True
        return tuple(r for r in range(height) if not seen[r])

    def extra_repr(self) -> str:
        return (
            f"V={self.filters}, k={self.kernel_size}, input={self.input_size}, "
            f"L={self.depth}, wall_rows={self.wall_rows}"
        )
