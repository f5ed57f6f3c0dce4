"""grad-cam's ``pytorch_grad_cam.utils``, written for camwall (no pytorch-grad-cam import)."""

from camwall.compat.pytorch_grad_cam.utils import model_targets, reshape_transforms
from camwall.compat.pytorch_grad_cam.utils.image import deprocess_image
from camwall.compat.pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

__all__ = ["deprocess_image", "get_2d_projection", "model_targets", "reshape_transforms"]
