"""Walls, walled models, exact dead zones and checkpoints.

A *wall* makes a region of the input (the *dead zone*) provably unable to change a model's
output. Public API (import from ``camwall.walls``):

* :class:`WallSpec` (the blocked rows / columns / rectangle of a feature map), :class:`Wall`
  (zero a region of a feature map), :class:`WalledLinear` (a Flatten head with walled weights),
  :func:`insert_wall`, :func:`wall_head`, :func:`enforce_walls`, :func:`walls_of`;
* models: :func:`walled_vgg16` (the paper's), :func:`simple_cnn` (the paper's Section 2 CNN),
  :func:`fashion_vgg`, :func:`fashion_resnet`; :data:`MODELS`, :func:`create_model`,
  :func:`model_config`, :func:`default_target_layer`;
* :func:`dead_zone` (structural, exact, eval mode), :func:`dead_zone_summary`,
  :func:`verify_wall` -> :class:`WallCheck`;
* :func:`save_model`, :func:`load_model`, :func:`checkpoint_paths` (safetensors + JSON).
"""

from camwall.walls._checkpoint import checkpoint_paths, load_model, save_model
from camwall.walls._deadzone import WallCheck, dead_zone, dead_zone_summary, verify_wall
from camwall.walls._models import (
    MODELS,
    create_model,
    default_target_layer,
    fashion_resnet,
    fashion_vgg,
    model_config,
    simple_cnn,
    walled_vgg16,
)
from camwall.walls._modules import (
    Wall,
    WalledLinear,
    enforce_walls,
    insert_wall,
    wall_head,
    walls_of,
)
from camwall.walls._spec import WallSpec

__all__ = [
    "MODELS",
    "Wall",
    "WallCheck",
    "WallSpec",
    "WalledLinear",
    "checkpoint_paths",
    "create_model",
    "dead_zone",
    "dead_zone_summary",
    "default_target_layer",
    "enforce_walls",
    "fashion_resnet",
    "fashion_vgg",
    "insert_wall",
    "load_model",
    "model_config",
    "save_model",
    "simple_cnn",
    "verify_wall",
    "wall_head",
    "walled_vgg16",
    "walls_of",
]
