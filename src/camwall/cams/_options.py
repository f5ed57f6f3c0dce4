"""Method names and options at the engine's boundary: resolve, split per method, chunk sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from camwall.cams._base import METHODS, CamMethod
from camwall.cams._smooth import SMOOTH_OPTIONS
from camwall.errors import CamwallError, did_you_mean

__all__ = ["ENGINE_OPTIONS", "build_methods", "chunk_options", "resolve_methods"]

#: The options of :class:`camwall.cams.CamEngine` itself (not of a method).
ENGINE_OPTIONS = ("output_fn", "head", "channels_last", "reshape_transform")


def resolve_methods(methods: str | Sequence[str]) -> list[type[CamMethod]]:
    """The classes of ``methods`` (a name or names from ``METHODS``), without repeats."""
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise CamwallError(f"no CAM method requested; choose from: {', '.join(METHODS.names())}.")
    classes: list[type[CamMethod]] = []
    for name in names:
        if not isinstance(name, str):
            raise CamwallError(f"method names must be strings, got {name!r}.")
        cls = METHODS.get(name)
        if cls not in classes:
            classes.append(cls)
    return classes


def _known_options() -> list[str]:
    return sorted({name for _, cls in METHODS.items() for name in cls.options})


def check_option_names(options: dict[str, Any]) -> None:
    """Refuse an option that no method (nor the smoothing options) declares."""
    known = [*_known_options(), *SMOOTH_OPTIONS]
    for name in options:
        if name not in known:
            raise CamwallError(
                f"unknown option {name!r}.{did_you_mean(name, [*known, *ENGINE_OPTIONS])} "
                f"Options: {', '.join([*known, *ENGINE_OPTIONS])}."
            )


def build_methods(classes: Sequence[type[CamMethod]], options: dict[str, Any]) -> list[CamMethod]:
    """One instance per class, each given only its own options (checked once, here)."""
    check_option_names(options)
    return [cls(**{k: v for k, v in options.items() if k in cls.options}) for cls in classes]


def chunk_options(x: Tensor, methods: Sequence[str]) -> dict[str, int]:
    """Chunk sizes for a batch ``x`` (B x C x H x W): ``{chunk_option: rows}`` of ``methods``.

    For each method with a ``chunk_option`` (:class:`CamMethod`), ``rows = max(default,
    chunk_budget // (C * H * W))``: small inputs go through the model in larger chunks, large
    ones keep the library default. Names that are not engine methods are ignored.
    """
    per_row = max(1, x[0].numel())
    out: dict[str, int] = {}
    for name in methods:
        cls = METHODS.get(name) if name in METHODS else None
        if cls is None or cls.chunk_option is None:
            continue
        floor = int(cls.options[cls.chunk_option])
        out[cls.chunk_option] = max(floor, cls.chunk_budget // per_row)
    return out
