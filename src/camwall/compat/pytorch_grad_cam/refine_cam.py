"""grad-cam's ``pytorch_grad_cam.refine_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._meta import RefineCAM

__all__ = ["RefineCAM"]
