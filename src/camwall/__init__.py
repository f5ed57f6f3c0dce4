"""camwall: test whether saliency maps are faithful, with walled models.

A *wall* is a model built so that one region of the input (the *dead zone*) provably cannot
change its output. Any attribution a saliency method places there is a fault of the method.
"""

from camwall.errors import CamwallError

__version__ = "0.1.0"

__all__ = ["CamwallError", "__version__"]
