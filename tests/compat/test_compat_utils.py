"""The helpers of camwall.compat.pytorch_grad_cam against grad-cam 1.5.7's own."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_grad_cam as gc
import torch
from pytorch_grad_cam import ablation_layer as gc_ablation
from pytorch_grad_cam.metrics import arcc as gc_arcc
from pytorch_grad_cam.metrics import cam_mult_image as gc_mult
from pytorch_grad_cam.metrics import road as gc_road
from pytorch_grad_cam.sobel_cam import sobel_cam as gc_sobel
from pytorch_grad_cam.utils import find_layers as gc_find
from pytorch_grad_cam.utils import image as gc_image
from pytorch_grad_cam.utils import model_targets as gc_targets
from pytorch_grad_cam.utils import reshape_transforms as gc_reshape
from pytorch_grad_cam.utils import svd_on_activations as gc_svd
from torch import nn

import camwall.compat.pytorch_grad_cam as cw
from camwall.compat.pytorch_grad_cam import ablation_layer as cw_ablation
from camwall.compat.pytorch_grad_cam.metrics import arcc as cw_arcc
from camwall.compat.pytorch_grad_cam.metrics import cam_mult_image as cw_mult
from camwall.compat.pytorch_grad_cam.metrics import road as cw_road
from camwall.compat.pytorch_grad_cam.sobel_cam import sobel_cam as cw_sobel
from camwall.compat.pytorch_grad_cam.utils import find_layers as cw_find
from camwall.compat.pytorch_grad_cam.utils import image as cw_image
from camwall.compat.pytorch_grad_cam.utils import model_targets as cw_targets
from camwall.compat.pytorch_grad_cam.utils import reshape_transforms as cw_reshape
from camwall.compat.pytorch_grad_cam.utils import svd_on_activations as cw_svd

RNG = np.random.default_rng(0)


def image(h: int = 12, w: int = 10) -> np.ndarray:
    return RNG.random((h, w, 3)).astype(np.float32)


def test_preprocess_and_deprocess() -> None:
    img = image()
    for arr in (img, np.uint8(img * 255)):
        assert torch.equal(cw_image.preprocess_image(arr), gc_image.preprocess_image(arr))
        kw = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]}
        assert torch.equal(
            cw_image.preprocess_image(arr, **kw), gc_image.preprocess_image(arr, **kw)
        )
    assert np.array_equal(cw_image.deprocess_image(img), gc_image.deprocess_image(img))


@pytest.mark.parametrize("use_rgb", [False, True])
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_show_cam_on_image(use_rgb: bool, weight: float) -> None:
    img, mask = image(), RNG.random((12, 10)).astype(np.float32)
    ours = cw_image.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=weight)
    theirs = gc_image.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=weight)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("size", [None, (10, 12), (23, 17), (4, 5)])
def test_scale_cam_image_2d(size) -> None:
    cams = RNG.random((3, 7, 6)).astype(np.float32) - 0.2
    ours, theirs = cw_image.scale_cam_image(cams, size), gc_image.scale_cam_image(cams, size)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-6  # torch bilinear vs cv2.resize rounding


def test_scale_cam_image_3d_and_across_channels() -> None:
    vol = RNG.random((2, 3, 4, 5)).astype(np.float32)
    assert np.array_equal(
        cw_image.scale_cam_image(vol, (10, 8, 6)), gc_image.scale_cam_image(vol, (10, 8, 6))
    )
    t = RNG.random((2, 3, 5, 4)).astype(np.float32)
    ours = cw_image.scale_accross_batch_and_channels(t, (9, 11))
    assert ours.shape == (2, 3, 11, 9)
    assert np.abs(ours - gc_image.scale_accross_batch_and_channels(t, (9, 11))).max() <= 1e-6


def test_labels_legend() -> None:
    scores = RNG.random((3, 4))
    labels = {i: f"a{i},b{i},c{i},d{i}" for i in range(4)}
    assert cw_image.create_labels_legend(scores, labels, 2) == gc_image.create_labels_legend(
        scores, labels, 2
    )


def test_factorization_overlay() -> None:
    """Explicit colours: grad-cam's default (``plt.cm.get_cmap``) fails on matplotlib 3.11."""
    img, expl = image(), RNG.random((3, 12, 10)).astype(np.float32)
    colors = [np.array([1.0, 0, 0, 1]), np.array([0, 1.0, 0, 1]), np.array([0.2, 0.3, 0.9, 1])]
    ours = cw_image.show_factorization_on_image(img, expl.copy(), colors)
    assert np.array_equal(ours, gc_image.show_factorization_on_image(img, expl.copy(), colors))
    assert cw_image.show_factorization_on_image(img, expl.copy()).shape == (12, 10, 3)


def activations_with_nan() -> np.ndarray:
    a = RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)
    a[0, 1, 2, 3] = np.nan
    return a


@pytest.mark.parametrize("name", ["get_2d_projection", "get_2d_projection_with_sign_correction"])
def test_svd_projections(name: str) -> None:
    a = activations_with_nan()
    snapshot = a.copy()
    ours, theirs = getattr(cw_svd, name)(a), getattr(gc_svd, name)(a)
    assert np.array_equal(a, snapshot, equal_nan=True)
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-6


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "linear", "poly", "cosine"])
@pytest.mark.parametrize("gamma", [None, 0.3])
def test_kernel_projection(kernel: str, gamma) -> None:
    """float64 activations on both sides (grad-cam's float32 KernelPCA has its own ~1e-5
    rounding); 30 positions keep scikit-learn on its dense solver."""
    a = np.nan_to_num(activations_with_nan()).astype(np.float64)
    ours = cw_svd.get_2d_projection_kernel(a, kernel, gamma)
    theirs = gc_svd.get_2d_projection_kernel(a, kernel, gamma)
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, np.abs(theirs).max())


def test_find_layers(resnet) -> None:
    model = copy.deepcopy(resnet)
    types = [nn.Conv2d, nn.BatchNorm2d]
    assert cw_find.find_layer_types_recursive(model, types) == gc_find.find_layer_types_recursive(
        model, types
    )
    old, new = model.layer1[0].conv1, nn.Identity()
    assert cw_find.replace_layer_recursive(model, old, new)
    assert model.layer1[0].conv1 is new
    relu = nn.ReLU()
    cw_find.replace_all_layer_type_recursive(model, nn.ReLU, relu)
    assert all(m is relu for m in model.modules() if isinstance(m, nn.ReLU))


def test_reshape_transforms() -> None:
    tokens = torch.randn(2, 1 + 14 * 14, 5)
    grid = cw_reshape.vit_reshape_transform(tokens)
    assert torch.equal(grid, gc_reshape.vit_reshape_transform(tokens))
    assert torch.equal(cw_reshape.vit_reshape_transform.inverse(grid, tokens), tokens)
    swin = torch.randn(2, 49, 5)
    grid = cw_reshape.swinT_reshape_transform(swin)
    assert torch.equal(grid, gc_reshape.swinT_reshape_transform(swin))
    assert torch.equal(cw_reshape.swinT_reshape_transform.inverse(grid, swin), swin)
    fpn = {k: torch.randn(1, 2, s, s) for k, s in [("0", 16), ("1", 8), ("pool", 4)]}
    assert torch.equal(
        cw_reshape.fasterrcnn_reshape_transform(fpn), gc_reshape.fasterrcnn_reshape_transform(fpn)
    )


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("ClassifierOutputTarget", (2,)),
        ("ClassifierOutputSoftmaxTarget", (2,)),
        ("ClassifierOutputReST", (2,)),
        ("BinaryClassifierOutputTarget", (1,)),
        ("BinaryClassifierOutputTarget", (0,)),
        ("SoftmaxOutputTarget", ()),
        ("RawScoresOutputTarget", ()),
        ("FinerWeightedTarget", (1, [0, 3], 0.7)),
    ],
)
@pytest.mark.parametrize("shape", [(5,), (3, 5)])
def test_model_targets(name: str, args: tuple, shape: tuple) -> None:
    out = torch.randn(*shape)
    ours = getattr(cw_targets, name)(*args)(out)
    theirs = getattr(gc_targets, name)(*args)(out)
    assert torch.allclose(ours, theirs, atol=1e-7, rtol=0)


def test_segmentation_and_box_targets() -> None:
    mask = np.float32(RNG.random((6, 7)) > 0.5)
    out = torch.randn(3, 6, 7)
    assert torch.equal(
        cw_targets.SemanticSegmentationTarget(2, mask)(out),
        gc_targets.SemanticSegmentationTarget(2, mask)(out),
    )
    boxes = [np.array([0, 0, 10, 10.0]), np.array([5, 5, 20, 20.0])]
    det = {
        "boxes": torch.tensor([[1, 1, 10, 10.0], [5, 6, 19, 20], [30, 30, 40, 40]]),
        "labels": torch.tensor([1, 2, 1]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
    }
    for labels in ([1, 2], [1, 1], [3, 2]):
        ours = cw_targets.FasterRCNNBoxScoreTarget(labels, boxes)(det)
        assert torch.equal(ours, gc_targets.FasterRCNNBoxScoreTarget(labels, boxes)(det))


@pytest.mark.parametrize("seed", range(6))
def test_box_target_matches_all_references_at_once_like_grad_cam(seed: int) -> None:
    """The batched match (one M x P IoU matrix) gives grad-cam's one-row-at-a-time score,
    bit for bit: random boxes, duplicated detections (ties in the argmax), label misses."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(9, 2, generator=g) * 40
    det_boxes = torch.cat([corner, corner + 5 + torch.rand(9, 2, generator=g) * 20], 1)
    det_boxes = torch.cat([det_boxes, det_boxes[:2]])  # exact duplicates: first maximum wins
    det = {
        "boxes": det_boxes,
        "labels": torch.randint(0, 3, (11,), generator=g),
        "scores": torch.rand(11, generator=g),
    }
    refs = (det_boxes[torch.randperm(11, generator=g)[:7]] + torch.randn(7, 4, generator=g)).numpy()
    labels = torch.randint(0, 3, (7,), generator=g).tolist()
    for threshold in (0.3, 0.5, 0.9):
        ours = cw_targets.FasterRCNNBoxScoreTarget(labels, list(refs), threshold)(det)
        theirs = gc_targets.FasterRCNNBoxScoreTarget(labels, list(refs), threshold)(det)
        assert torch.equal(ours, theirs)
    empty = {
        **det,
        "boxes": det_boxes[:0],
        "labels": det["labels"][:0],
        "scores": det["scores"][:0],
    }
    assert torch.equal(
        cw_targets.FasterRCNNBoxScoreTarget(labels, list(refs))(empty),
        gc_targets.FasterRCNNBoxScoreTarget(labels, list(refs))(empty),
    )
    assert float(cw_targets.FasterRCNNBoxScoreTarget([], [])(det)) == 0.0


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_sobel_cam(dtype) -> None:
    img = np.random.default_rng(3).random((64, 48, 3)).astype(np.float32)
    img = np.uint8(img * 255) if dtype == np.uint8 else img * 3
    assert np.array_equal(cw_sobel(img), gc_sobel(img))


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_ablation_layers(ratio: float) -> None:
    acts = torch.relu(torch.randn(2, 6, 4, 5))
    ours, theirs = cw_ablation.AblationLayer(), gc_ablation.AblationLayer()
    idx = ours.activations_to_be_ablated(acts[1].numpy(), ratio)
    assert np.array_equal(idx, theirs.activations_to_be_ablated(acts[1].numpy(), ratio))
    for layer in (ours, theirs):
        layer.set_next_batch(1, acts, 4)
    assert torch.equal(ours(None), theirs(None))
    tokens = torch.randn(2, 5, 6)
    ours, theirs = cw_ablation.AblationLayerVit(), gc_ablation.AblationLayerVit()
    for layer in (ours, theirs):
        layer.activations_to_be_ablated(tokens[0].numpy().T, 1.0)
        layer.set_next_batch(0, tokens, 3)
    assert torch.equal(ours(None), theirs(None))


def test_guided_backprop(cnn) -> None:
    x = torch.rand(1, 3, 12, 10)
    ours = cw.GuidedBackpropReLUModel(cnn)(x, None)
    theirs = gc.GuidedBackpropReLUModel(copy.deepcopy(cnn), device="cpu")(x.clone(), None)
    assert np.abs(ours - theirs).max() <= 1e-6


def metric_inputs(cnn):
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    cams = RNG.random((2, 12, 10)).astype(np.float32)
    return x, cams


@pytest.mark.parametrize(
    "name", ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence"]
)
def test_cam_mult_image_metrics(cnn, name: str) -> None:
    x, cams = metric_inputs(cnn)
    targets = [cw_targets.ClassifierOutputSoftmaxTarget(i) for i in (1, 4)]
    ours = getattr(cw_mult, name)()(x, cams, targets, cnn)
    theirs = getattr(gc_mult, name)()(x, cams, targets, cnn)
    assert np.abs(ours - theirs).max() <= 1e-6
    _, images = cw_mult.CamMultImageConfidenceChange()(
        x, cams, targets, cnn, return_visualization=True
    )
    assert images.shape == x.shape


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("ROADMostRelevantFirst", (75,)),
        ("ROADLeastRelevantFirst", (30,)),
        ("ROADMostRelevantFirst", ("auto",)),
        ("ROADCombined", ([20, 60],)),
    ],
)
def test_road(cnn, name: str, args: tuple) -> None:
    x, cams = metric_inputs(cnn)
    targets = [cw_targets.ClassifierOutputTarget(i) for i in (1, 4)]
    torch.manual_seed(5)
    ours = getattr(cw_road, name)(*args)(x, cams, targets, cnn)
    torch.manual_seed(5)
    theirs = getattr(gc_road, name)(*args)(x, cams, targets, cnn)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_road_imputation() -> None:
    img = torch.rand(3, 9, 8)
    mask = torch.from_numpy(np.float32(RNG.random((9, 8)) > 0.4))
    torch.manual_seed(1)
    ours = cw_road.NoisyLinearImputer()(img, mask)
    torch.manual_seed(1)
    theirs = gc_road.NoisyLinearImputer()(img, mask)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert torch.equal(ours[:, mask > 0], img[:, mask > 0])


def test_arcc(cnn) -> None:
    """The same base method on both sides isolates the metric."""
    x, cams = metric_inputs(cnn)
    targets = [cw_targets.ClassifierOutputTarget(i) for i in (1, 4)]
    base = cw.GradCAM(cnn, [cnn[5]])
    torch.manual_seed(2)
    ours = cw_arcc.ARCC(base, [30, 70])(x, cams, targets, cnn)
    torch.manual_seed(2)
    theirs = gc_arcc.ARCC(base, [30, 70])(x, cams, targets, cnn)
    assert np.abs(ours - theirs).max() <= 1e-5
