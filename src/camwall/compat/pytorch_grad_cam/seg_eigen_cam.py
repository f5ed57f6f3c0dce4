"""grad-cam's ``pytorch_grad_cam.seg_eigen_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._meta import SegEigenCAM

__all__ = ["SegEigenCAM"]
