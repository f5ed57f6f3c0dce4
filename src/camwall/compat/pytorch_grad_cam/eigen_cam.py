"""grad-cam's ``pytorch_grad_cam.eigen_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import EigenCAM

__all__ = ["EigenCAM"]
