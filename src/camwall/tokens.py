"""Token grids: a vision transformer's ``B x (P + N) x C`` tokens as a ``B x C x h x w`` map.

The one place both :mod:`camwall.cams` (the CAM engine's ``reshape_transform``) and
:mod:`camwall.walls` (the walled ViTs' declared reshape) take :class:`TokenGrid` from;
``camwall.cams.token_grid`` / ``camwall.cams.TokenGrid`` are the same objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camwall.errors import CamwallError

__all__ = ["ChannelsLastGrid", "TokenGrid", "channels_last_grid", "token_grid"]


@dataclass(frozen=True)
class TokenGrid:
    """Tokens B x (P + N) x C to a grid B x C x h x w and back (``h * w = N``).

    ``grid = tokens[:, P:, :].reshape(B, h, w, C).permute(0, 3, 1, 2)``: exactly
    pytorch-grad-cam's documented ViT ``reshape_transform`` (there with ``P = 1``, ``h = w = 14``).

    Attributes:
        prefix_tokens: ``P``, the leading tokens that are not patches (class, distillation or
            register tokens); dropped by the transform, restored by :meth:`inverse`.
        grid: ``(h, w)``; ``None``: ``h = w = sqrt(N)`` (N must be a square).
    """

    prefix_tokens: int = 1
    grid: tuple[int, int] | None = None

    def _shape(self, tokens: Any) -> tuple[int, int]:
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise CamwallError(
                f"token_grid expects B x T x C tokens from the target layer, got {got}; choose a "
                f"transformer block's layer (e.g. 'encoder.layers.encoder_layer_1.ln_1')."
            )
        n = tokens.shape[1] - self.prefix_tokens
        if self.grid is not None:
            h, w = self.grid
        else:
            h = w = math.isqrt(max(n, 0))
        if n <= 0 or h * w != n:
            raise CamwallError(
                f"token_grid(prefix_tokens={self.prefix_tokens}, grid={self.grid}) cannot lay "
                f"out {tokens.shape[1]} tokens as {self.prefix_tokens} + h x w; pass the right "
                f"prefix_tokens or grid=(h, w)."
            )
        return h, w

    def __call__(self, tokens: Any) -> Tensor:
        """B x (P + N) x C tokens to the B x C x h x w grid of the N patch tokens."""
        h, w = self._shape(tokens)
        b, _, c = tokens.shape
        return tokens[:, self.prefix_tokens :, :].reshape(b, h, w, c).permute(0, 3, 1, 2)

    def inverse(self, grid: Tensor, original: Tensor) -> Tensor:
        """B x C x h x w grid back to B x (P + N) x C tokens, prefix tokens from ``original``."""
        body = grid.flatten(2).transpose(1, 2)
        prefix = original[:, : self.prefix_tokens, :].to(body.dtype)
        return torch.cat([prefix, body], dim=1)


def token_grid(prefix_tokens: int = 1, grid: tuple[int, int] | None = None) -> TokenGrid:
    """A reshape transform (with ``.inverse``) for vision-transformer tokens.

    Args:
        prefix_tokens: leading non-patch tokens (1 for a class token, 0 for none).
        grid: ``(h, w)`` patch grid; default a square ``sqrt(N)`` grid.

    Returns:
        A callable ``B x (P + N) x C -> B x C x h x w`` with ``inverse(grid, original)``.
    """
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise CamwallError(
            f"token_grid: prefix_tokens must be a non-negative integer, got {prefix_tokens!r}."
        )
    if grid is not None:
        if len(tuple(grid)) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in grid
        ):
            raise CamwallError(f"token_grid: grid must be (h, w) positive integers, got {grid!r}.")
        grid = (int(grid[0]), int(grid[1]))
    return TokenGrid(prefix_tokens, grid)


@dataclass(frozen=True)
class ChannelsLastGrid:
    """Channels-last tokens ``B x h x w x C`` (a Swin stage's layout) to the grid
    ``B x C x h x w`` (``tokens.permute(0, 3, 1, 2)``) and back (:meth:`inverse`).

    Attributes:
        widths: the model's token widths ``C`` (one per stage). The CAM engine passes other
            4-D outputs unchanged as feature maps (:meth:`takes`): a ``B x C x h x w`` map has
            a width on axis 1, tokens on axis 3 only (a stage whose grid side equals its
            width is ambiguous and read as a map; pass ``reshape_transform`` for it).
    """

    widths: tuple[int, ...] = ()

    def takes(self, output: Any) -> bool:
        """Whether a 4-D ``output`` is channels-last tokens (its last axis a width, axis 1
        not)."""
        return (
            isinstance(output, Tensor)
            and output.dim() == 4
            and int(output.shape[-1]) in self.widths
            and int(output.shape[1]) not in self.widths
        )

    def __call__(self, tokens: Any) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 4:
            got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise CamwallError(
                f"channels_last_grid expects B x h x w x C tokens from the target layer, got "
                f"{got}; choose a Swin block's layer (e.g. 'features.7.1.norm1')."
            )
        return tokens.permute(0, 3, 1, 2)

    def inverse(self, grid: Tensor, original: Tensor) -> Tensor:
        """``B x C x h x w`` grid back to ``B x h x w x C`` tokens (``original``'s dtype)."""
        return grid.permute(0, 2, 3, 1).to(original.dtype)


def channels_last_grid(widths: tuple[int, ...] = ()) -> ChannelsLastGrid:
    """The reshape transform (with ``.inverse``) of Swin tokens: ``B x h x w x C`` ->
    ``B x C x h x w``; ``widths``: the token widths, by which the CAM engine tells these
    tokens from ``B x C x h x w`` feature maps (:meth:`ChannelsLastGrid.takes`)."""
    return ChannelsLastGrid(tuple(int(w) for w in widths))
