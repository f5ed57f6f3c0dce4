"""grad-cam's ``pytorch_grad_cam.finer_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._meta import FinerCAM

__all__ = ["FinerCAM"]
