"""grad-cam's ``pytorch_grad_cam.kpca_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import KPCA_CAM

__all__ = ["KPCA_CAM"]
