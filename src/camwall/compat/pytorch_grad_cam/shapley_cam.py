"""grad-cam's ``pytorch_grad_cam.shapley_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import ShapleyCAM

__all__ = ["ShapleyCAM"]
