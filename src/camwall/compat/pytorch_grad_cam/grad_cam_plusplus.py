"""grad-cam's ``pytorch_grad_cam.grad_cam_plusplus`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import GradCAMPlusPlus

__all__ = ["GradCAMPlusPlus"]
