"""Your own images and model: ``camwall bench --model CKPT --dataset FOLDER`` and
``camwall.wall_test(model=nn.Module, datasets=[FOLDER])`` on an ImageFolder tree written here.

The independent computation reads the PNGs with PIL, normalizes them with the ImageNet mean /
std (the rule for a 3-channel checkpoint without a ``normalize`` entry), computes GradCAM with
pytorch-grad-cam 1.5.7 at the checkpoint's target layer and the wall leakage
``mu = ||L * D||_2 / ||L||_2`` over the walled model's dead zone ``D``, empty maps left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import camwall
from camwall.cli import main
from camwall.errors import CamwallError
from camwall.runtime import IMAGENET_MEAN, IMAGENET_STD
from camwall.walls import create_model, dead_zone, describe, load_model, save_model

SIDE = 16
CLASSES = ("cat", "dog", "owl")


def _vit() -> nn.Module:
    """A 3 x 16 x 16 walled ViT (4 x 4 patches, the bottom patch row dead: rows 12..15)."""
    torch.manual_seed(0)
    model = create_model(
        "walled-vit", num_classes=3, image_size=SIDE, channels=3, patch_size=4, dim=8, depth=2,
        heads=2, mlp_dim=16, dead_rows=1,
    )  # fmt: skip
    with torch.no_grad():
        nn.init.normal_(model.head.weight)  # type: ignore[arg-type]
    return model.eval()


def _tree(root: Path, per_class: int = 2, size: tuple[int, int] = (SIDE, SIDE)) -> Path:
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = (rng.random((*size, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_model(_vit(), tmp_path / "ckpt" / "vit", {"class_names": list(CLASSES)})


def _read(root: Path) -> tuple[Tensor, Tensor]:
    """The tree's images (sorted classes, sorted files) in [0, 1] and their labels."""
    files = [(k, f) for k, c in enumerate(CLASSES) for f in sorted((root / c).iterdir())]
    x = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(f), np.float32) / 255) for _, f in files]
    )
    return x.permute(0, 3, 1, 2), torch.tensor([k for k, _ in files])


def _gradcam_mu(model: nn.Module, images: Tensor) -> tuple[float, float]:
    """pytorch-grad-cam's GradCAM of the predicted class: (mean, std) of mu over the non-empty
    maps, on ImageNet-normalized inputs."""
    from pytorch_grad_cam import GradCAM

    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    x = (images - mean) / torch.tensor(IMAGENET_STD)[:, None, None]
    info = describe(model)
    layer = model.get_submodule(info.target_layer)
    with GradCAM(model, [layer], reshape_transform=_tokens) as cam:
        maps = torch.from_numpy(cam(x, targets=None)).double()  # None: the predicted class
    zone = dead_zone(model, (3, SIDE, SIDE)).double()
    keep = maps.flatten(1).amax(1) > 0
    mu = (maps * zone).flatten(1).norm(dim=1) / maps.flatten(1).norm(dim=1)
    mu = mu[keep]
    return float(mu.mean()), float(mu.std(unbiased=False))


def _tokens(t: Tensor) -> Tensor:
    """grad-cam's documented ViT transform: drop the class token, tokens to a 4 x 4 grid."""
    return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)


def test_bench_on_an_image_folder_matches_an_independent_gradcam_leakage(tmp_path, ckpt):
    pytest.importorskip("pytorch_grad_cam")
    tree = _tree(tmp_path / "pets")
    out = tmp_path / "out"
    argv = ["bench", "--model", str(ckpt), "--dataset", str(tree), "--out", str(out)]
    assert main([*argv, "--methods", "gradcam,legrad,rollout,uniform", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    got = summary["datasets"]["pets"]["gradcam"]
    mean, std = _gradcam_mu(load_model(ckpt)[0], _read(tree)[0])
    assert got["n"] + got["empty"] == 6
    assert got["mean"] == pytest.approx(mean, abs=1e-5)
    assert got["std"] == pytest.approx(std, abs=1e-5)
    uniform = summary["datasets"]["pets"]["uniform"]["mean"]
    assert uniform == pytest.approx((4 / 16) ** 0.5, abs=1e-6)  # sqrt(dead fraction)
    info = summary["model_info"][next(iter(summary["model_info"]))]
    assert info["normalize"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def test_a_tree_of_another_size_is_resized_and_centre_cropped(tmp_path):
    from camwall.bench._inputs import resolve_dataset
    from camwall.data.images import preprocess

    tree = _tree(tmp_path / "big", per_class=1, size=(24, 20))
    ds = resolve_dataset(str(tree), 10, 0, channels=3, size=(SIDE, SIDE))
    first = Image.open(tree / "cat" / "0.png")
    want = torch.from_numpy(np.asarray(preprocess(first, SIDE, SIDE), np.float32) / 255)
    assert ds.images.shape == (3, 3, SIDE, SIDE)
    torch.testing.assert_close(ds.images[0], want.permute(2, 0, 1), rtol=0, atol=0)
    same = _tree(tmp_path / "same", per_class=1)  # already 16 x 16: read as it is
    torch.testing.assert_close(
        resolve_dataset(str(same), 3, 0, 3, (SIDE, SIDE)).images, _read(same)[0]
    )


@dataclass
class _Output:
    """A HuggingFace-style output (``transformers``' ``ImageClassifierOutput`` has ``logits``)."""

    logits: Tensor
    hidden_states: tuple[Tensor, ...] | None = None


class _HFStyle(nn.Module):
    """A walled model whose forward returns an object with ``.logits``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> _Output:
        return _Output(logits=self.inner(x))


def test_wall_test_takes_a_module_with_hf_style_outputs_and_a_folder(tmp_path):
    from camwall.walls import declare

    tree = _tree(tmp_path / "pets")
    inner = _vit()
    model = _HFStyle(inner)
    info = describe(inner)
    declare(model, input_shape=info.input_shape, target_layer="inner." + info.target_layer)
    declare(model, reshape=info.reshape)
    hf = camwall.wall_test("gradcam", model=model, datasets=[str(tree)])
    plain = camwall.wall_test("gradcam", model=inner, datasets=[str(tree)])
    got, want = hf.to_dict()["datasets"]["pets"], plain.to_dict()["datasets"]["pets"]
    assert got["gradcam"]["mu"] == want["gradcam"]["mu"]
    assert got["gradcam"]["mu"]["mean"] == pytest.approx(
        _gradcam_mu(inner, _read(tree)[0])[0], abs=1e-5
    )


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root.mkdir(), "no class subfolders"),
        (lambda root: (root / "a").mkdir(parents=True), "no image files in its 1 class folder"),
        (lambda root: _write(root / "a" / "notes.txt", b"hello"), "1 other file(s) found"),
        (lambda root: _write(root / "a" / "broken.png", b"not a png"), "broken.png"),
    ],
    ids=["empty", "no-images", "non-image-files", "undecodable"],
)
def test_bad_folder_is_one_clear_error(capsys, tmp_path, ckpt, make, message):
    root = tmp_path / "bad"
    make(root)
    argv = ["bench", "--model", str(ckpt), "--dataset", str(root), "--out", str(tmp_path / "o")]
    err = _one_line_error(capsys, [*argv, "--methods", "gradcam"])
    assert message in err
    assert str(root) in err or "bad" in err


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_stackmix_folder_of_the_wrong_size_is_one_clear_error(capsys, tmp_path, ckpt):
    from camwall.data.folders import FORMAT, MANIFEST

    root = _tree(tmp_path / "mix", per_class=1, size=(20, 20))
    items = [{"file": f"{c}/0.png", "label": k} for k, c in enumerate(CLASSES)]
    manifest = {"format": FORMAT, "items": items, "class_names": list(CLASSES), "n": 3}
    (root / MANIFEST).write_text(json.dumps(manifest))
    argv = ["bench", "--model", str(ckpt), "--dataset", str(root), "--out", str(tmp_path / "o")]
    err = _one_line_error(capsys, [*argv, "--methods", "gradcam"])
    assert "'mix' has 20x20 images but model 'vit' takes 16x16 inputs" in err


def test_a_bad_normalize_entry_names_the_fix(tmp_path):
    from camwall.bench._inputs import input_normalization

    assert input_normalization({}, 1, "m") is None
    assert input_normalization({"normalize": "none"}, 3, "m") is None
    assert input_normalization({"normalize": {"mean": [0.5], "std": [2]}}, 1, "m") == (
        (0.5,),
        (2.0,),
    )
    with pytest.raises(CamwallError, match=r'"std": \[3 numbers > 0\]'):
        input_normalization({"normalize": {"mean": [0, 0, 0], "std": [1, 0, 1]}}, 3, "m")
