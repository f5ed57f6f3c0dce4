"""grad-cam's ``pytorch_grad_cam.layer_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import LayerCAM

__all__ = ["LayerCAM"]
