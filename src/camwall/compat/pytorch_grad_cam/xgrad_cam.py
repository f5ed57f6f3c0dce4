"""grad-cam's ``pytorch_grad_cam.xgrad_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import XGradCAM

__all__ = ["XGradCAM"]
