"""grad-cam's ``pytorch_grad_cam.grad_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import GradCAM

__all__ = ["GradCAM"]
