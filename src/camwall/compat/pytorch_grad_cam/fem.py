"""grad-cam's ``pytorch_grad_cam.fem`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import FEM

__all__ = ["FEM"]
