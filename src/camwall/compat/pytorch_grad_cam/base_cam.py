"""grad-cam's ``pytorch_grad_cam.base_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._base import BaseCAM

__all__ = ["BaseCAM"]
