"""Models and helpers shared by the compat tests (a module of its own: a `conftest` name
is shared by every test folder, so importing from it depends on the collection order)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

#: FPN level names of torchvision's resnet50 FPN (grad-cam's AblationLayerFasterRCNN's).
FPN_LEVELS = ("0", "1", "2", "3", "pool")

#: Small detection settings for CPU tests: every box kept (random weights score low), few
#: proposals and detections.
SMALL_DETECTION = {
    "box_score_thresh": 0.0,
    "rpn_pre_nms_top_n_test": 40,
    "rpn_post_nms_top_n_test": 12,
    "box_detections_per_img": 6,
}


def signed_projection(batch: np.ndarray) -> np.ndarray:
    """grad-cam's projection with camwall's sign rule (positive correlation with the channel
    mean of what is decomposed)."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    proj = get_2d_projection(batch)
    corr = (proj * np.nan_to_num(batch).mean(axis=1)).sum(axis=(1, 2))
    return np.where(corr[:, None, None] < 0, -proj, proj).astype(np.float32)


def mobilenet_detector(seed: int = 0) -> nn.Module:
    """Random-weight torchvision fasterrcnn_mobilenet_v3_large_fpn (5 classes, 128 x 160)."""
    torch.manual_seed(seed)
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=5, min_size=128, max_size=160,
        **SMALL_DETECTION,
    ).eval()  # fmt: skip


def resnet50_detector(seed: int = 0) -> nn.Module:
    """Random-weight torchvision fasterrcnn_resnet50_fpn (3 classes, 64 x 80, 4 proposals)."""
    torch.manual_seed(seed)
    small = {**SMALL_DETECTION, "rpn_pre_nms_top_n_test": 16, "rpn_post_nms_top_n_test": 4}
    return torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=80, **small
    ).eval()


class TinyPyramid(nn.Module):
    """Five 256-channel levels named as torchvision's resnet50 FPN (what grad-cam's
    AblationLayerFasterRCNN assumes), at 1/8 .. 1/16 of the input."""

    out_channels = 256

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 256, 8, stride=8)
        self.down = nn.Conv2d(256, 256, 2, stride=2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = torch.tanh(self.stem(x - 0.5))
        b = self.down(a)
        levels = [a, b, torch.tanh(b), b.flip(-1), nn.functional.max_pool2d(b, 1, 1)]
        return dict(zip(FPN_LEVELS, levels, strict=True))


def tiny_detector(seed: int = 0) -> nn.Module:
    """A torchvision FasterRCNN on :class:`TinyPyramid` with a small box head (3 classes,
    64 x 64 inputs): the detection pipeline of fasterrcnn_resnet50_fpn at a CPU test's cost."""
    torch.manual_seed(seed)
    anchors = AnchorGenerator(
        sizes=((16,), (24,), (32,), (40,), (48,)), aspect_ratios=((1.0,),) * 5
    )
    return FasterRCNN(
        TinyPyramid(),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(list(FPN_LEVELS[:4]), output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(256 * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, 3),
        min_size=64,
        max_size=64,
        **SMALL_DETECTION,
    ).eval()


def tiny_cnn(classes: int = 6) -> nn.Sequential:
    """Conv-BN-ReLU x 2 and a GAP + Linear head; the target layer is ``model[5]`` (a ReLU)."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


class TinySeg(nn.Module):
    """B x 3 x H x W -> B x 4 x H x W class scores (segmentation); target layer ``act``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.act(self.conv(x)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")


def vit_grid(tokens: torch.Tensor) -> torch.Tensor:
    """grad-cam's documented ViT transform for a 4 x 4 patch grid (class token dropped)."""
    return tokens[:, 1:, :].reshape(tokens.size(0), 4, 4, tokens.size(2)).permute(0, 3, 1, 2)
