"""pytorch-grad-cam 1.5.7 classes that camwall's methods are checked against (option tests)."""

from __future__ import annotations

import numpy as np
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)


class SignedEigenCAM(EigenCAM):
    """grad-cam's EigenCAM with camwall's documented sign rule (positive correlation with the
    channel-mean map); 2-D (B x h x w) and 3-D (B x d x h x w) maps."""

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, smooth):
        cam = super().get_cam_image(input_tensor, target_layer, targets, activations, grads, smooth)
        corr = (cam * np.nan_to_num(activations).mean(axis=1)).sum(axis=tuple(range(1, cam.ndim)))
        return np.where(corr.reshape(-1, *[1] * (cam.ndim - 1)) < 0, -cam, cam)


#: camwall name -> grad-cam class, for the methods every option supports (2-D and 3-D).
GRADIENT_REFERENCE = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "gradcamelementwise": GradCAMElementWise,
    "eigencam": SignedEigenCAM,
}
