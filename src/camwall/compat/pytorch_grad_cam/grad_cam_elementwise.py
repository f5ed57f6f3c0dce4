"""grad-cam's ``pytorch_grad_cam.grad_cam_elementwise`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import GradCAMElementWise

__all__ = ["GradCAMElementWise"]
