"""CAM methods: every class-activation-map method of :data:`METHODS` behind one engine.

Public API::

    from camwall.cams import METHODS, compute_cams, CamEngine

    maps = compute_cams(model, x, "features.29", ["gradcam", "hirescam"])
    maps["gradcam"]          # B x H x W float32 in [0, 1], on x.device
    METHODS.get("sscam").stochastic, METHODS.get("sscam").chunk_option   # facts on the class

Methods follow ``docs/cam-methods.md`` and match pytorch-grad-cam 1.5.7 (torchcam 0.5 for
``cam``) to 1e-5 except for the deliberate differences named there (eigen sign, ablation value on
negative layers, randomcam's explicit generator). ``DEFAULT_METHODS`` are the nine of the wall
benchmark's default run plus the six added methods that keep it fast (gradcamelementwise,
eigengradcam, fem, randomcam, finercam, fullgrad); the others have ``CamMethod.default = False``.
"""

from __future__ import annotations

# isort: off
# Importing the method modules registers them, in this order.
from camwall.cams import _gradient, _eigen, _score, _ablation, _opti  # noqa: F401
from camwall.cams import _activation, _finer, _cam, _fullgrad  # noqa: F401
from camwall.cams import _rollout, _legrad  # noqa: F401
from camwall.cams import _noise, _sess, _refine  # noqa: F401

# isort: on
from camwall.cams._base import METHODS, CamContext, CamMethod, CamRunner, Needs, PassExtras
from camwall.cams._engine import CamEngine, compute_cams, resolve_layer
from camwall.cams._options import chunk_options
from camwall.cams._post import finalize_maps, normalize_maps
from camwall.cams._reshape import FpnGrid
from camwall.cams._rollout import attention_rollout
from camwall.cams._targets import ClassTarget
from camwall.tokens import TokenGrid, token_grid

#: The methods of the wall benchmark's default run (``CamMethod.default``), in order.
DEFAULT_METHODS: tuple[str, ...] = tuple(n for n, c in METHODS.items() if c.default)

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "CamContext",
    "CamEngine",
    "CamMethod",
    "CamRunner",
    "ClassTarget",
    "FpnGrid",
    "Needs",
    "PassExtras",
    "TokenGrid",
    "attention_rollout",
    "chunk_options",
    "compute_cams",
    "finalize_maps",
    "normalize_maps",
    "resolve_layer",
    "token_grid",
]
