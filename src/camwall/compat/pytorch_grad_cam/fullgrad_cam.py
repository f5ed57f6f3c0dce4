"""grad-cam's ``pytorch_grad_cam.fullgrad_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import FullGrad

__all__ = ["FullGrad"]
