"""Library versions recorded in every manifest, results store and training run."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["versions"]

_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "matplotlib", "safetensors")


def versions() -> dict[str, str]:
    """Return ``{"python", "platform", "camwall", "torch", "torchvision", ...}`` version strings.

    Package versions come from the installed distributions' metadata (no import needed);
    a package that is not installed is reported as ``"not installed"``.
    """
    from camwall import __version__

    out = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "camwall": __version__,
    }
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
