"""grad-cam's ``pytorch_grad_cam.random_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import RandomCAM

__all__ = ["RandomCAM"]
