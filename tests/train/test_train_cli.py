"""`camwall train`, `camwall evaluate`, `camwall train-plot`, and the ImageFolder pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from camwall.cli import main
from camwall.walls import load_model

TINY_FLAGS = [
    "--arch-kwarg",
    "width=2",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--train-limit",
    "128",
    "--val-limit",
    "64",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--preset", "fashion-vgg", *TINY_FLAGS, "--out", str(out)]) == 0
    return out


def test_train_writes_both_models_metrics_and_plot(run: Path, capsys) -> None:
    for v in ("walled", "baseline"):
        assert (run / f"{v}.safetensors").is_file()
        assert (run / f"{v}.json").is_file()
        assert (run / v / "metrics.csv").read_text().startswith("epoch,step,partial,lr,")
    assert (run / "curves.png").is_file()
    _, meta = load_model(run / "walled.safetensors")
    assert meta["training"]["config"]["train_limit"] == 128


def test_evaluate_reports_the_same_accuracy_as_training(run: Path, capsys) -> None:
    capsys.readouterr()
    args = ["evaluate", "--model", str(run / "walled.safetensors"), "--dataset"]
    code = main([*args, "fashion-canvases", "--n", "64", "--device", "cpu", "--json"])
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    final = json.loads((run / "walled" / "metrics.jsonl").read_text().splitlines()[-1])
    assert got["n"] == 64
    # The same 64 test canvases; training validated channels-last, evaluate runs contiguous:
    # other kernels, so only the canvases with a near-tie (_near_ties) may count differently.
    walled = run / "walled.safetensors"
    assert round(abs(got["top1"] - final["val_top1"]) * 64) <= _near_ties(walled, 64, rank=1)
    assert round(abs(got["top5"] - final["val_top5"]) * 64) <= _near_ties(walled, 64, rank=5)


def _near_ties(checkpoint: Path, n: int, rank: int) -> int:
    """How many of the first ``n`` test canvases have their ``rank``-th and next logits within
    1e-3 of the largest |logit|: float32 rounding of the convolution sums (eps x their ~1,000
    terms) can swap those two, and only those."""
    from camwall.train._data import eval_dataset

    model, meta = load_model(checkpoint)
    ds = eval_dataset("fashion-canvases", tuple(meta["input_shape"]), n=n)
    with torch.no_grad():
        z = model.eval()(torch.stack([ds[i][0] for i in range(n)]))
    top = z.topk(rank + 1, dim=1).values
    return int((top[:, rank - 1] - top[:, rank] <= 1e-3 * z.abs().amax(dim=1)).sum())


@pytest.mark.parametrize("name", ["fashion-stackmix", "fashion-stackpair"])
def test_evaluate_on_composites(run: Path, capsys, name: str) -> None:
    capsys.readouterr()
    args = ["evaluate", "--model", str(run / "baseline.safetensors"), "--dataset", name]
    assert main([*args, "--n", "20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"on {name} (20 images): top-1 " in out


def test_evaluate_unknown_dataset_is_a_clear_error(run: Path, capsys) -> None:
    args = ["evaluate", "--model", str(run / "walled.safetensors"), "--dataset", "fashion-stakmix"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "neither a dataset name nor an existing folder" in err
    assert "Did you mean 'fashion-stackmix'" in err
    assert "Traceback" not in err


def test_train_plot_redraws_the_figure(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    assert main(["train-plot", str(run), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["train-plot", str(tmp_path)]) == 2


def test_max_steps_then_resume_equals_straight_run(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    flags = [*TINY_FLAGS, "--out", str(out), "--walled"]
    assert main(["train", "--preset", "fashion-vgg", *flags, "--max-steps", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["completed"] is False
    assert main(["train", "--preset", "fashion-vgg", *flags, "--resume"]) == 0
    a, _ = load_model(out / "walled.safetensors")
    b, _ = load_model(run / "walled.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_bad_options_exit_2_with_a_message(tmp_path: Path, capsys) -> None:
    assert main(["train", "--preset", "imagenet-vgg16", "--out", str(tmp_path)]) == 2
    assert "--data DIR" in capsys.readouterr().err
    args = ["train", "--preset", "fashion-vgg", "--out", str(tmp_path), "--lr", "-1"]
    assert main(args) == 2
    assert "--lr: expected a number > 0, got -1" in capsys.readouterr().err
    args = ["train", "--preset", "imagenet-vgg16", "--data", str(tmp_path / "nope")]
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _image_folder(root: Path, classes: int = 2, per_class: int = 2, size: int = 72) -> Path:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (size, size + 8, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"img{i}.png")
    return root


IMAGEFOLDER_FLAGS = [
    "--preset",
    "imagenet-vgg16",
    "--num-classes",
    "2",
    "--batch-size",
    "2",
    "--max-steps",
    "2",
    "--num-workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]


def test_imagenet_preset_code_path_with_a_tiny_architecture(tmp_path: Path, capsys) -> None:
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "out"
    small = ["--arch", "fashion-vgg", "--arch-kwarg", "width=2", "--image-size", "64"]
    args = ["train", *IMAGEFOLDER_FLAGS, *small, "--data", str(data), "--out", str(out)]
    assert main(args) == 0
    for v in ("walled", "baseline"):
        rows = [json.loads(s) for s in (out / v / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 1
        assert rows[0]["step"] == 2
        assert rows[0]["partial"] is False  # 4 images / batch 2 = one full epoch of 2 steps
        _, meta = load_model(out / f"{v}.safetensors")
        assert meta["class_names"] == ["n00000000", "n00000001"]
        assert meta["training"]["config"]["lr"] == 0.03
    capsys.readouterr()
    ev = ["evaluate", "--model", str(out / "walled.safetensors"), "--dataset", str(data / "val")]
    assert main([*ev, "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4


@pytest.mark.slow
def test_imagenet_preset_real_vgg16_two_steps(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data", size=240)
    out = tmp_path / "out"
    args = ["train", *IMAGEFOLDER_FLAGS, "--walled", "--data", str(data), "--out", str(out)]
    assert main([*args, "--val-limit", "2"]) == 0
    model, meta = load_model(out / "walled.safetensors")
    assert meta["arch"] == "walled-vgg16"
    assert meta["input_shape"] == [3, 224, 224]
    assert meta["training"]["steps"] == 2
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 2)
