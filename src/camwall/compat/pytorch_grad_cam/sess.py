"""grad-cam's ``pytorch_grad_cam.sess`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._meta import SESS

__all__ = ["SESS"]
