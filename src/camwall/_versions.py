"""Library versions recorded in every manifest, results store and training run."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["versions"]

_PACKAGES = ("numpy", "pillow", "matplotlib", "safetensors")


def versions() -> dict[str, str]:
    """Return ``{"python", "platform", "camwall", "torch", "torchvision", ...}`` version strings.

    torch and torchvision report their own ``__version__`` (it carries the build, such as
    ``+cu130``); the other packages' versions come from the installed distributions' metadata
    (no import needed), ``"not installed"`` when absent.
    """
    import torch
    import torchvision

    from camwall import __version__

    out = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "camwall": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
