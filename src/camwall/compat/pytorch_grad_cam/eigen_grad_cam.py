"""grad-cam's ``pytorch_grad_cam.eigen_grad_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import EigenGradCAM

__all__ = ["EigenGradCAM"]
