"""Data: Fashion-MNIST (the embedded default), single-item canvases, the embedded STACK-MIX and
STACK-GEN analogues, and STACK-MIX / STACK-GEN folders built from ImageNet-layout image folders.

Public API (import from ``camwall.data``):

* :func:`load_fashion_mnist`, :data:`FASHION_CLASSES`
* :func:`fashion_canvases` / :class:`FashionCanvases`: 1 x 64 x 64 single-item canvases
* :data:`DATASETS` (``fashion-stackmix``, ``fashion-stackpair``, ``fashion-grid``: 2 x 2
  mosaics, labels per cell), :class:`Composites`; :func:`fashion_grids` (training mosaics),
  :func:`cell_masks`
* :func:`build_stackmix`, :func:`build_stackgen`, :func:`write_prompts`: image-folder datasets;
  :func:`export_composites`: write in-memory images as such a folder
* :func:`read_image_dataset` / :class:`ImageDataset`, :func:`load_image`, :func:`preprocess`
* :func:`preview_grid`
"""

from camwall.data.canvas import place_items
from camwall.data.canvases import CANVAS, TRAIN_LAYOUT, FashionCanvases, Layout, fashion_canvases
from camwall.data.composites import (
    DATASETS,
    LOWER_LAYOUT,
    UPPER_LAYOUT,
    CompositeBuilder,
    Composites,
    build_dataset,
)
from camwall.data.fashion import FASHION_CLASSES, load_fashion_mnist
from camwall.data.folders import (
    MANIFEST,
    PROMPT_TEMPLATE,
    build_stackgen,
    build_stackmix,
    export_composites,
    imagenet_categories,
    write_prompts,
)
from camwall.data.grid import CELLS, FashionGrids, cell_masks, fashion_grids
from camwall.data.images import IMAGE_EXTENSIONS, load_image, preprocess
from camwall.data.preview import preview_grid
from camwall.data.reader import ImageDataset, SkippedFilesWarning, read_image_dataset

__all__ = [
    "CANVAS",
    "CELLS",
    "DATASETS",
    "FASHION_CLASSES",
    "IMAGE_EXTENSIONS",
    "LOWER_LAYOUT",
    "MANIFEST",
    "PROMPT_TEMPLATE",
    "TRAIN_LAYOUT",
    "UPPER_LAYOUT",
    "CompositeBuilder",
    "Composites",
    "FashionCanvases",
    "FashionGrids",
    "ImageDataset",
    "Layout",
    "SkippedFilesWarning",
    "build_dataset",
    "build_stackgen",
    "build_stackmix",
    "cell_masks",
    "export_composites",
    "fashion_canvases",
    "fashion_grids",
    "imagenet_categories",
    "load_fashion_mnist",
    "load_image",
    "place_items",
    "preprocess",
    "preview_grid",
    "read_image_dataset",
    "write_prompts",
]
