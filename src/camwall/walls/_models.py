"""Walled models: the paper's VGG16, the paper's one-layer CNN, and small Fashion-MNIST models.

Every builder records what is needed to rebuild and save the model in its frozen
:class:`~camwall.walls.ModelInfo` (:func:`~camwall.walls.describe`): ``arch`` (registry name),
``kwargs``, ``walls`` (JSON-ready entries), ``input_shape`` ``(C, H, W)`` and ``target_layer``
(dotted name of the CAM target layer). :func:`model_config` returns them as a dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.registry import Registry, function_name
from camwall.walls._checks import class_count, positive_int
from camwall.walls._info import declare, describe
from camwall.walls._modules import Wall, WalledLinear, set_walls, walls_of
from camwall.walls._spec import WallSpec

__all__ = [
    "MODELS",
    "create_model",
    "default_target_layer",
    "fashion_resnet",
    "fashion_vgg",
    "model_config",
    "simple_cnn",
    "walled_vgg16",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", key=function_name)

#: torchvision's VGG16 ("D") feature configuration; "M" is a 2 x 2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def _tag(
    model: nn.Module,
    arch: str,
    kwargs: dict[str, Any],
    input_shape: tuple[int, int, int],
    target_layer: str | None,
    **more: Any,
) -> nn.Module:
    """Describe ``model`` (its walls, already recorded, are kept); ``more``: other
    :class:`ModelInfo` fields (``reshape``, ``task``, ``kind``)."""
    declare(
        model,
        arch=arch,
        kwargs=kwargs,
        input_shape=tuple(input_shape),
        target_layer=target_layer,
        **more,
    )
    return model


def _check_args(walled: Any, **sizes: Any) -> None:
    """Refuse builder arguments that would build a broken network: ``walled`` must be a bool
    and each of ``sizes`` (``num_classes``, ``width``, ``channels``) a positive integer."""
    if not isinstance(walled, bool):
        raise CamwallError(f"model argument walled must be true or false, got {walled!r}.")
    for name, value in sizes.items():
        if name == "num_classes":
            class_count(value, "model argument num_classes")
        else:
            positive_int(value, f"model argument {name}")


def _linear_wall_entry(layer: str, lin: WalledLinear) -> dict[str, Any]:
    return lin.wall_entry(layer)


def _init_vgg(model: nn.Module) -> None:
    """torchvision's VGG initialisation: Kaiming-normal convs (fan_out), N(0, 0.01) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, WalledLinear):
            m.enforce()


def _init_kaiming(model: nn.Module) -> None:
    """He initialisation for the small BatchNorm-free nets: Kaiming-normal (fan_in, ReLU) convs
    and linears, zero biases; a :class:`WalledLinear` gets its wall re-applied.

    PyTorch's default (Kaiming-uniform with ``a = sqrt(5)``, i.e. variance 1 / (3 fan_in)) shrinks
    the signal by about 1/sqrt(6) per ReLU layer, so the BatchNorm-free nets start slowly.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, WalledLinear):
            m.enforce()


def _head(
    in_shape: tuple[int, int, int], wall: WallSpec | None, out: int, bias: bool = True
) -> nn.Linear:
    c, h, w = in_shape
    if wall is None:
        return nn.Linear(c * h * w, out, bias=bias)
    return WalledLinear(c * h * w, out, bias=bias, feature_shape=in_shape, wall=wall)


@MODELS.add
def walled_vgg16(num_classes: int = 1000, walled: bool = True) -> nn.Sequential:
    """The paper's walled VGG16 (or its baseline with ``walled=False``), for 3 x 224 x 224 input.

    One flat ``nn.Sequential`` (index: layer):

    * ``0..29``: torchvision ``vgg16().features[0:30]`` (13 conv3x3 + ReLU, 4 max-pools), with
      the last max-pool (index 30) removed and the last conv (``28``) 512 -> 256 channels;
      ``29`` is the last ReLU, the CAM target layer, output ``256 x 14 x 14``;
    * ``30``: Flatten; ``31``: Linear(256*14*14 -> 4096), a :class:`WalledLinear` whose weights
      reading feature rows 5..13 (bottom 9 of 14) are 0; ``32`` ReLU; ``33`` Dropout;
      ``34`` Linear(4096 -> 4096); ``35`` ReLU; ``36`` Dropout; ``37`` Linear(4096 -> classes).

    The dead zone at 224 x 224 is input rows 170..223 (54 rows, 24.1% of the image).
    Initialisation is torchvision's. ImageNet normalisation is not part of the model.
    """
    _check_args(walled, num_classes=num_classes)
    with torch.device("meta"):  # allocate and initialise the 138 M weights only once
        model = _vgg16_layers(num_classes, walled)
    model = model.to_empty(device="cpu")
    _init_vgg(model)
    _tag(model, "walled-vgg16", {"num_classes": num_classes, "walled": walled}, (3, 224, 224), "29")
    if isinstance(model[31], WalledLinear):
        set_walls(model, [_linear_wall_entry("31", model[31])])
    return model


def _vgg16_layers(num_classes: int, walled: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for i, v in enumerate(_VGG16_CFG[:-1]):  # drop the last max-pool
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_ch = 256 if i == len(_VGG16_CFG) - 2 else int(v)
        layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        in_ch = out_ch
    assert len(layers) == 30  # features[0:30]: the last max-pool is gone
    wall = WallSpec(rows=(5, None)) if walled else None
    layers += [
        nn.Flatten(),
        _head((256, 14, 14), wall, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
        nn.Linear(4096, num_classes),
    ]
    return nn.Sequential(*layers)


@MODELS.add
def simple_cnn(num_classes: int = 10, walled: bool = True, channels: int = 256) -> nn.Sequential:
    """The paper's one-layer CNN (Section 2), for 1 x 29 x 29 input.

    ``0`` Conv2d(1 -> channels, 2 x 2, no bias); ``1`` ReLU (CAM target); ``2`` MaxPool 2 x 2;
    ``3`` Flatten; ``4`` Linear(channels*14*14 -> classes, no bias), walled on the bottom 7 of
    14 pooled rows. Pooled row ``p`` reads input rows ``2p..2p+2``, so the live pooled rows
    0..6 read input rows 0..14 and the dead zone is input rows 15..28 (the bottom 14 rows).
    Weights use PyTorch's default initialisation; the theory uses N(0, 1) (re-draw them).
    """
    _check_args(walled, num_classes=num_classes, channels=channels)
    wall = WallSpec(rows=(7, None)) if walled else None
    head = _head((channels, 14, 14), wall, num_classes, bias=False)
    model = nn.Sequential(
        nn.Conv2d(1, channels, kernel_size=2, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        head,
    )
    kwargs = {"num_classes": num_classes, "walled": walled, "channels": channels}
    _tag(model, "simple-cnn", kwargs, (1, 29, 29), "1")
    if isinstance(head, WalledLinear):
        set_walls(model, [_linear_wall_entry("4", head)])
    return model


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


def fashion_trunk(w: int) -> list[nn.Module]:
    """Layers ``0..9`` of the Fashion VGG models: 1 x 64 x 64 -> ``w x 16 x 16``.

    conv(1 -> w), ReLU, pool, conv(w -> 2w), ReLU, pool, conv(2w -> 4w), ReLU, conv(4w -> w),
    ReLU (3 x 3 convs, padding 1). Shared by :func:`fashion_vgg` and ``fashion_grid_vgg``.
    """
    return [
        _conv(1, w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        _conv(w, 2 * w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        _conv(2 * w, 4 * w),
        nn.ReLU(inplace=True),
        _conv(4 * w, w),
        nn.ReLU(inplace=True),
    ]


@MODELS.add
def fashion_vgg(num_classes: int = 10, walled: bool = True, width: int = 16) -> nn.Sequential:
    """A small VGG-style walled model (or baseline) for 1 x 64 x 64 inputs in [0, 1].

    Flat ``nn.Sequential`` (``w = width``): ``0`` conv(1 -> w) ``1`` ReLU ``2`` pool (32 x 32)
    ``3`` conv(w -> 2w) ``4`` ReLU ``5`` pool (16 x 16) ``6`` conv(2w -> 4w) ``7`` ReLU
    ``8`` conv(4w -> w) ``9`` ReLU (CAM target, ``w x 16 x 16``) ``10`` Flatten
    ``11`` Linear(w*16*16 -> 64), walled on feature rows 7..15 (bottom 9 of 16, as in the paper)
    ``12`` ReLU ``13`` Dropout(0.25) ``14`` Linear(64 -> classes). No max-pool after the last
    block, no BatchNorm (so the wall holds in train and eval mode). He initialization
    (Kaiming-normal, fan-in, zero biases; the wall's weights are 0).

    Feature row ``r`` reads input rows up to ``4r + 10`` (two 3 x 3 convs at 16 x 16, one at
    32 x 32, one at 64 x 64, two 2 x 2 pools), so the live rows 0..6 read input rows 0..38 and
    the dead zone is input rows **39..63** (25 rows, 39.1% of the canvas), all columns.
    About 0.30 M parameters at ``width=16``.
    """
    _check_args(walled, num_classes=num_classes, width=width)
    w = width
    wall = WallSpec(rows=(7, None)) if walled else None
    head = _head((w, 16, 16), wall, 64)
    model = nn.Sequential(
        *fashion_trunk(w),
        nn.Flatten(),
        head,
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.25),
        nn.Linear(64, num_classes),
    )
    _init_kaiming(model)
    kwargs = {"num_classes": num_classes, "walled": walled, "width": width}
    _tag(model, "fashion-vgg", kwargs, (1, 64, 64), "9")
    if isinstance(head, WalledLinear):
        set_walls(model, [_linear_wall_entry("11", head)])
    return model


class BasicBlock(nn.Module):
    """BatchNorm-free residual block: ``relu(conv2(relu(conv1(x))) + shortcut(x))``.

    ``shortcut`` is the identity, or a 1 x 1 conv with the block's stride when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv(cout, cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            nn.Conv2d(cin, cout, kernel_size=1, stride=stride)
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))) + self.shortcut(x))


class FashionResNet(nn.Module):
    """Small BatchNorm-free ResNet for 1 x 64 x 64 inputs; see :func:`fashion_resnet`."""

    def __init__(self, num_classes: int, walled: bool, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv(1, w), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.layer1 = BasicBlock(w, w)
        self.layer2 = BasicBlock(w, 2 * w, stride=2)
        self.layer3 = BasicBlock(2 * w, 2 * w)
        self.wall: nn.Module = Wall(WallSpec(rows=(5, None))) if walled else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in (self.layer1, self.layer2, self.layer3):
            with_scale = block.conv2.weight
            with_scale.data.mul_(0.2)  # keep the BatchNorm-free residual sum tame at init

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(self.wall(x))))


@MODELS.add
def fashion_resnet(num_classes: int = 10, walled: bool = True, width: int = 16) -> FashionResNet:
    """A small walled ResNet-style model (or baseline) for 1 x 64 x 64 inputs in [0, 1].

    ``stem`` (conv(1 -> w), ReLU, max-pool: 32 x 32), ``layer1`` block(w), ``layer2``
    block(w -> 2w, stride 2: 16 x 16), ``layer3`` block(2w) (CAM target, ``2w x 16 x 16``),
    ``wall``: a :class:`Wall` zeroing feature rows 5..15 (an ``nn.Identity`` when not walled),
    global average pool, ``fc``. Blocks are BatchNorm-free (so the wall holds in train and eval
    mode); the last conv of each residual branch starts at 0.2 x its Kaiming scale.

    The dead zone is input rows **37..63** (27 rows, 42.2% of the canvas), all columns.
    About 0.03 M parameters at ``width=16``.
    """
    _check_args(walled, num_classes=num_classes, width=width)
    model = FashionResNet(num_classes, walled, width)
    kwargs = {"num_classes": num_classes, "walled": walled, "width": width}
    _tag(model, "fashion-resnet", kwargs, (1, 64, 64), "layer3")
    if walled:
        set_walls(
            model, [{"kind": "wall", "layer": "wall", "region": WallSpec(rows=(5, None)).to_dict()}]
        )
    return model


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (see ``MODELS.names()``) with builder ``kwargs``."""
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise CamwallError(
            f"model {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(params)}."
        )
    return builder(**kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel``-style ``.module``
    wrapper (the model itself when it is not wrapped)."""
    inner = getattr(model, "module", None)
    if describe(model).arch is None and isinstance(inner, nn.Module):
        return inner
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """What is needed to rebuild ``model``: ``arch``, ``arch_kwargs``, ``wall``,
    ``input_shape``, ``target_layer`` (a ``.module`` wrapper such as DDP is looked through).

    Raises:
        CamwallError: when the model was not built by a registered builder or by
        :func:`~camwall.walls.walled_torchvision`.
    """
    model = unwrap(model)
    info = describe(model)
    arch = info.arch
    if arch is None:
        raise CamwallError(
            f"{type(model).__name__} has no camwall architecture record; build it with "
            f"camwall.walls.create_model(name) (names: {', '.join(MODELS.names())}) or, for a "
            "torchvision classifier, camwall.walls.walled_torchvision(name, walls)."
        )
    shape = info.input_shape
    return {
        "arch": arch,
        "arch_kwargs": info.kwargs_dict(),
        "wall": walls_of(model),
        "input_shape": list(shape) if shape is not None else None,
        "target_layer": info.target_layer,
    }


#: Top-level children that make up a classifier head (torchvision's names).
_HEAD_NAMES = frozenset({"avgpool", "flatten", "fc", "classifier", "head", "heads", "dropout"})
#: Auxiliary classifiers (GoogLeNet, Inception v3): skipped, they do not feed the output.
_SIDE_BRANCHES = frozenset({"aux1", "aux2", "AuxLogits"})
_TARGET_TYPES = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.Hardswish,
)


def default_target_layer(model: nn.Module) -> str:
    """Dotted name of the CAM target layer of ``model``.

    The layer recorded by the builder (``"29"`` for :func:`walled_vgg16`: the last ReLU, whose
    ``256 x 14 x 14`` output the walled Linear reads). Otherwise, for torchvision-style ResNets
    the last ``layerN``; else the last ``Conv2d``, ``BatchNorm2d`` or activation module before
    the head: the first Flatten or Linear, a top-level adaptive pool, or a top-level child
    called ``avgpool``, ``classifier``, ``fc``, ``head``, ... (adaptive pools inside blocks,
    such as squeeze-and-excitation, do not end the search; auxiliary classifiers are skipped),
    lifted to its enclosing block while it is that block's last child (so a Fire or Inception
    block gives its concatenated output). E.g. ``features.29`` for torchvision's VGG16 (the
    last ReLU, before the last max-pool), ``features`` for EfficientNet, MobileNet and
    DenseNet, ``inception5b`` for GoogLeNet.
    """
    recorded = describe(model).target_layer
    if recorded:
        return str(recorded)
    names = dict(model.named_children())
    layers = sorted((n for n in names if n.startswith("layer") and n[5:].isdigit()), key=len)
    if layers:
        return max(layers, key=lambda n: int(n[5:]))
    last: str | None = None
    for name, m in model.named_modules():
        top, depth = name.split(".")[0], name.count(".")
        if top in _SIDE_BRANCHES:
            continue
        if name and (
            top in _HEAD_NAMES
            or isinstance(m, (nn.Flatten, nn.Linear))
            or (depth == 0 and isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)))
        ):
            break
        if isinstance(m, _TARGET_TYPES):
            last = name
    # Lift to the enclosing block while this layer is its last child: the block's output is
    # then the same tensor, or the concatenation of its branches (Fire, Inception).
    while last is not None and "." in last:
        parent, _, child = last.rpartition(".")
        children = [n for n, _ in model.get_submodule(parent).named_children()]
        if not children or children[-1] != child:
            break
        last = parent
    if last is None:
        raise CamwallError(
            f"cannot find a CAM target layer in {type(model).__name__}: no Conv2d or activation "
            "before the head; pass target_layer explicitly."
        )
    return last
