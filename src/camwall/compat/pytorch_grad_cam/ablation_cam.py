"""grad-cam's ``pytorch_grad_cam.ablation_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import AblationCAM

__all__ = ["AblationCAM"]
