"""camwall: test whether saliency maps are faithful, with walled models.

A *wall* is a model built so that one region of the input (the *dead zone*) provably cannot
change its output. Any attribution a saliency method places there is a fault of the method.
"""

from typing import Any

from camwall.errors import CamwallError

__version__ = "0.1.0"

__all__ = ["CamwallError", "WallTestResult", "__version__", "wall_test"]


def __getattr__(name: str) -> Any:
    """``camwall.wall_test`` and ``camwall.WallTestResult``, imported on first use (torch)."""
    if name in ("wall_test", "WallTestResult"):
        from camwall import walltest

        return getattr(walltest, name)
    raise AttributeError(f"module 'camwall' has no attribute {name!r}")
