"""Image helpers of grad-cam: preprocessing, overlays, and CAM scaling.

``scale_cam_image`` resizes with torch's bilinear interpolation (align_corners=False, no
antialias), which equals grad-cam's ``cv2.resize`` (INTER_LINEAR) to about 5e-7; 3-D maps use
``scipy.ndimage.zoom`` as grad-cam. The overlays use OpenCV's colormaps: they need
``opencv-python`` (or ``-headless``), imported only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from camwall.errors import CamwallError

__all__ = [
    "create_labels_legend",
    "deprocess_image",
    "preprocess_image",
    "scale_accross_batch_and_channels",
    "scale_cam_image",
    "show_cam_on_image",
    "show_factorization_on_image",
]

#: ``cv2.COLORMAP_JET`` (grad-cam's default colormap), without importing OpenCV.
COLORMAP_JET = 2


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise CamwallError(
            "this helper draws with OpenCV's colormaps: pip install opencv-python-headless."
        ) from None
    return cv2


def preprocess_image(
    img: np.ndarray, mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.5,) * 3
) -> torch.Tensor:
    """H x W x C image -> 1 x C x H x W tensor ``(to_tensor(img) - mean) / std`` (uint8 images
    are scaled to [0, 1] first, as torchvision's ``ToTensor``)."""
    tensor = TF.to_tensor(img.copy())
    return TF.normalize(tensor, mean=list(mean), std=list(std)).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Standardize, scale to std 0.1 around 0.5, clip to [0, 1] and return uint8 (x 255)."""
    img = img - np.mean(img)
    img = img / (np.std(img) + 1e-5)
    img = np.clip(img * 0.1 + 0.5, 0, 1)
    return np.asarray(img * 255).astype(np.uint8)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlay the colormapped ``mask`` (H x W in [0, 1]) on ``img`` (H x W x 3 float in
    [0, 1]): ``(1 - image_weight) * heatmap + image_weight * img``, scaled by its maximum, as
    uint8. The heatmap is BGR unless ``use_rgb``."""
    if np.max(img) > 1:
        raise CamwallError("show_cam_on_image: img must be float32 in [0, 1]; divide by 255.")
    if not 0 <= image_weight <= 1:
        raise CamwallError(
            f"show_cam_on_image: image_weight must be in [0, 1], got {image_weight}."
        )
    cv2 = _cv2()
    heatmap = cv2.applyColorMap(np.asarray(255 * mask).astype(np.uint8), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    cam = (1 - image_weight) * (np.asarray(heatmap, dtype=np.float32) / 255) + image_weight * img
    return np.asarray(255 * (cam / np.max(cam))).astype(np.uint8)


def create_labels_legend(
    concept_scores: np.ndarray, labels: dict[int, str], top_k: int = 2
) -> list[str]:
    """For each concept, its ``top_k`` categories as ``"label:score"`` lines (the label cut to
    its first three comma-separated names)."""
    legends = []
    for scores in concept_scores:
        top = np.argsort(scores)[::-1][:top_k]
        lines = [f"{','.join(labels[c].split(',')[:3])}:{scores[c]:.2f}" for c in top]
        legends.append("\n".join(lines))
    return legends


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: list[np.ndarray] | None = None,
    image_weight: float = 0.5,
    concept_labels: list | None = None,
) -> np.ndarray:
    """Colour each pixel by its strongest component (N x H x W explanations), the colour's HSV
    value set to that component's map; blend with ``img`` (H x W x 3 in [0, 1]): uint8
    ``image_weight * img + (1 - image_weight) * colours``. With ``concept_labels`` (one string
    per component) a legend of the colours, drawn by matplotlib at the image's size, is put to
    the right (as grad-cam; matplotlib's global ``rcParams`` are left as they were)."""
    cv2 = _cv2()
    n = explanations.shape[0]
    if colors is None:
        import matplotlib

        cmap = matplotlib.colormaps["gist_rainbow"]
        colors = [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / n)]
    winner = explanations.argmax(axis=0)
    masks = []
    for i in range(n):
        colour = np.zeros((img.shape[0], img.shape[1], 3))
        colour[:, :, :] = colors[i][:3]
        explanations[i][winner != i] = 0
        hsv = cv2.cvtColor(np.asarray(colour * 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
        hsv[:, :, 2] = np.asarray(255 * explanations[i]).astype(np.uint8)
        masks.append(np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), dtype=np.float32) / 255)
    blend = img * image_weight + np.sum(np.asarray(masks, dtype=np.float32), axis=0) * (
        1 - image_weight
    )
    result = np.asarray(blend * 255).astype(np.uint8)
    if concept_labels is None:
        return result
    legend = _legend(result.shape[:2], colors, list(concept_labels))
    return np.hstack((result, cv2.resize(legend, (result.shape[1], result.shape[0]))))


def _legend(size: tuple[int, int], colors: Sequence[np.ndarray], labels: list[str]) -> np.ndarray:
    """An H x W x 3 uint8 picture of the legend: one line of each colour and its label,
    font size ``14 H / 256 / max(1, N / 6)``, line width ``5 H / 256``."""
    import matplotlib
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    height, width = size
    n = len(colors)
    with matplotlib.rc_context():
        px = 1 / plt.rcParams["figure.dpi"]
        fig = plt.figure(figsize=(width * px, height * px))
        try:
            plt.rcParams["legend.fontsize"] = int(14 * height / 256 / max(1, n / 6))
            lines = [
                Line2D([0], [0], color=tuple(colors[i]), lw=5 * height / 256) for i in range(n)
            ]
            plt.legend(lines, labels, mode="expand", fancybox=True, shadow=True)
            plt.tight_layout(pad=0, w_pad=0, h_pad=0)
            plt.axis("off")
            fig.canvas.draw()
            return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
        finally:
            plt.close(fig)


def _min_max(img: np.ndarray) -> np.ndarray:
    img = img - np.min(img)
    return img / (1e-7 + np.max(img))


def _resize(img: np.ndarray, target_size: Sequence[int]) -> np.ndarray:
    """2-D: ``target_size = (W, H)`` (OpenCV's order), bilinear; 3-D: scipy's cubic zoom."""
    if img.ndim > 2:
        try:
            from scipy.ndimage import zoom
        except ImportError:
            raise CamwallError(
                "scale_cam_image of 3-D maps needs scipy: pip install scipy."
            ) from None
        factors = [t / s for s, t in zip(img.shape, target_size[::-1])]
        return zoom(np.asarray(img, dtype=np.float32), factors)
    width, height = int(target_size[0]), int(target_size[1])
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def scale_cam_image(cam: Any, target_size: Sequence[int] | None = None) -> np.ndarray:
    """Per map (first axis): min-max to [0, 1] (``1e-7`` guard), then resize to
    ``target_size`` (``(W, H)``, or ``(D, W, H)`` reversed per axis for 3-D maps); float32."""
    result = []
    for img in cam:
        img = _min_max(img)
        if target_size is not None:
            img = _resize(img, target_size)
        result.append(img)
    return np.asarray(result, dtype=np.float32)


def scale_accross_batch_and_channels(tensor: np.ndarray, target_size: Sequence[int]) -> np.ndarray:
    """B x C x h x w -> B x C x H x W with :func:`scale_cam_image` per (image, channel)."""
    b, c = tensor.shape[:2]
    flat = scale_cam_image(tensor.reshape(b * c, *tensor.shape[2:]), target_size)
    return flat.reshape(b, c, target_size[1], target_size[0])
