"""grad-cam's ``pytorch_grad_cam.hirescam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import HiResCAM

__all__ = ["HiResCAM"]
