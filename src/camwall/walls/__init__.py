"""Walls, walled models, exact dead zones and checkpoints.

A *wall* makes a region of the input (the *dead zone*) provably unable to change a model's
output. Public API (import from ``camwall.walls``):

* :class:`WallSpec` (blocked band, box, outside of a box or mask of a map), :class:`Wall`
  (zero a region of a feature map), :class:`WalledLinear` (a Flatten head with walled weights,
  one wall for all outputs or one per group of outputs),
  :func:`insert_wall`, :func:`wall_head`, :func:`enforce_walls`, :func:`walls_of`;
* models: :func:`walled_vgg16` (the paper's), :func:`simple_cnn` (the paper's Section 2 CNN),
  :func:`fashion_vgg`, :func:`fashion_resnet`, :func:`fashion_grid_vgg` (2 x 2 grid, a wall
  per cell's logits; :func:`model_task`, :func:`model_kind`, :func:`cell_walls`,
  :func:`output_groups`), :func:`walled_vit` / :func:`fashion_vit` (Vision Transformers walled
  by a structural attention mask, :class:`WalledViT`, :class:`MaskedSoftmax`; their declared
  reshape is a :func:`camwall.tokens.token_grid`); :data:`MODELS`, :func:`create_model`,
  :func:`model_config`, :func:`default_target_layer`;
* what a model says about itself: :class:`ModelInfo` (frozen: arch, kwargs, input shape,
  target layer, walls, reshape, task, kind, class names, per-output groups), read with
  :func:`describe`, changed with :func:`declare`;
* :func:`dead_zone` (structural, exact, eval mode; per output with ``target=``),
  :func:`dead_zones` (``K x H x W``, one per output), :func:`dead_zone_summary`,
  :func:`verify_wall` -> :class:`WallCheck`;
* :func:`save_model`, :func:`load_model`, :func:`checkpoint_paths` (safetensors + JSON);
* any torchvision classifier: :func:`walled_torchvision` (name + walls, saved and rebuilt by
  the checkpoint functions), :func:`load_weights` (a plain state dict, names of the unwalled
  network accepted), :func:`torchvision_names`; :func:`resolve_model` (checkpoint, registry
  name or torchvision name, as the CLIs take it);
* any torchvision or timm Vision Transformer: :func:`wall_vit` (in place: masked attention,
  an averaging head over the live tokens, :class:`LiveTokenPool`), :func:`walled_timm` (name
  + walls, like :func:`walled_torchvision`, which also takes ``vit_*`` names; timm is the
  optional extra ``camwall[timm]``);
* torchvision and timm Swin transformers (V1): :func:`wall_swin` (in place, on a region
  aligned to the coarsest grid: masked window attention, :class:`LiveGridPool` head), also
  through :func:`wall_vit`, ``walled_torchvision("swin_t", walls="features:rows=48:")`` and
  ``walled_timm("swin_tiny_patch4_window7_224", walls="layers:rows=48:")``;
* :func:`parse_wall` / :func:`format_wall`: the command-line form ``LAYER:rows=4:`` of a wall.
"""

from camwall.walls._checkpoint import checkpoint_paths, load_model, save_model
from camwall.walls._deadzone import dead_zone, dead_zone_summary, dead_zones
from camwall.walls._grid import (
    cell_walls,
    fashion_grid_vgg,
    model_kind,
    model_task,
    output_groups,
)
from camwall.walls._info import ModelInfo, declare, describe
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
from camwall.walls._parse import format_wall, parse_wall
from camwall.walls._resolve import is_checkpoint, resolve_model
from camwall.walls._spec import WallSpec
from camwall.walls._swin import LiveGridPool, wall_swin
from camwall.walls._timm import walled_timm
from camwall.walls._torchvision import load_weights, torchvision_names, walled_torchvision
from camwall.walls._verify import WallCheck, verify_wall
from camwall.walls._vit import MaskedSoftmax, WalledViT, fashion_vit, walled_vit
from camwall.walls._vit_any import LiveTokenPool, wall_vit

__all__ = [
    "MODELS",
    "LiveGridPool",
    "LiveTokenPool",
    "MaskedSoftmax",
    "ModelInfo",
    "Wall",
    "WallCheck",
    "WallSpec",
    "WalledLinear",
    "WalledViT",
    "cell_walls",
    "checkpoint_paths",
    "create_model",
    "dead_zone",
    "dead_zone_summary",
    "dead_zones",
    "declare",
    "default_target_layer",
    "describe",
    "enforce_walls",
    "fashion_grid_vgg",
    "fashion_resnet",
    "fashion_vgg",
    "fashion_vit",
    "format_wall",
    "insert_wall",
    "is_checkpoint",
    "load_model",
    "load_weights",
    "model_config",
    "model_kind",
    "model_task",
    "output_groups",
    "parse_wall",
    "resolve_model",
    "save_model",
    "simple_cnn",
    "torchvision_names",
    "verify_wall",
    "wall_head",
    "wall_swin",
    "wall_vit",
    "walled_timm",
    "walled_torchvision",
    "walled_vgg16",
    "walled_vit",
    "walls_of",
]
