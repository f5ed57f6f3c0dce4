"""grad-cam's ``pytorch_grad_cam.score_cam`` path (camwall's engine underneath)."""

from camwall.compat.pytorch_grad_cam._cams import ScoreCAM

__all__ = ["ScoreCAM"]
