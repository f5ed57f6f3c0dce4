"""pytorch-grad-cam 1.5.7's API on camwall's engine: change the import, keep the code.

``from camwall.compat.pytorch_grad_cam import GradCAM`` (and every module path of grad-cam:
``...utils.model_targets``, ``...utils.image``, ``...metrics.road``, ...). The CAM classes take
grad-cam's constructor and call and return grad-cam's B x H x W float32 maps, equal to 1e-5
except for the deliberate differences in ``docs/cam-methods.md`` and ``docs/compat.md``
(EigenCAM sign, AblationCAM's ablation value, RandomCAM's generator). It never imports
``pytorch_grad_cam``. Detection models (lists of per-image dicts), dict outputs and FPN
backbones (dict-valued layers) run natively, as do SegEigenCAM, RefineCAM and the options of
every class (see ``docs/compat.md`` for the few left, which raise a CamwallError naming them).
"""

from camwall.compat.pytorch_grad_cam import metrics, utils
from camwall.compat.pytorch_grad_cam._base import BaseCAM
from camwall.compat.pytorch_grad_cam._cams import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from camwall.compat.pytorch_grad_cam._meta import SESS, FinerCAM, RefineCAM, SegEigenCAM
from camwall.compat.pytorch_grad_cam.ablation_layer import (
    AblationLayer,
    AblationLayerFasterRCNN,
    AblationLayerVit,
)
from camwall.compat.pytorch_grad_cam.feature_factorization import (
    DeepFeatureFactorization,
    run_dff_on_image,
)
from camwall.compat.pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
from camwall.compat.pytorch_grad_cam.metrics import arcc, cam_mult_image, road
from camwall.compat.pytorch_grad_cam.utils import model_targets, reshape_transforms

__all__ = [
    "FEM",
    "KPCA_CAM",
    "SESS",
    "AblationCAM",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "BaseCAM",
    "DeepFeatureFactorization",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackpropReLUModel",
    "HiResCAM",
    "LayerCAM",
    "RandomCAM",
    "RefineCAM",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "XGradCAM",
    "arcc",
    "cam_mult_image",
    "metrics",
    "model_targets",
    "reshape_transforms",
    "road",
    "run_dff_on_image",
    "utils",
]
