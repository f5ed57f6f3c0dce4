"""`camwall evaluate` refuses what it cannot measure: n < 1, foreign labels, NaN models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from camwall.cli import main
from camwall.data import DATASETS, FASHION_CLASSES, export_composites
from camwall.errors import CamwallError
from camwall.train import evaluate, train
from camwall.walls import load_model, save_model

TINY = {"arch_kwargs": {"width": 2}, "epochs": 1, "batch_size": 64, "train_limit": 64}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    res = train("fashion-vgg", TINY, out, variants=("baseline",), device="cpu", progress=False)
    return res.checkpoints["baseline"]


@pytest.mark.parametrize("n", [0, -3])
def test_n_below_one_is_refused(model: Path, n: int, capsys) -> None:
    with pytest.raises(CamwallError, match=rf"--n must be at least 1 .*got {n}"):
        evaluate(model, "fashion-stackmix", n=n, device="cpu")
    args = ["evaluate", "--model", str(model), "--dataset", "fashion-canvases", "--n", str(n)]
    assert main(args) == 2
    assert "--n: must be at least 1" in capsys.readouterr().err  # refused at parse time


def test_default_composite_count_is_said(model: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("camwall.train._evaluate.DEFAULT_COMPOSITES", 12)
    res = evaluate(model, "fashion-stackpair", device="cpu")
    assert res.n == 12
    assert "building 12 fashion-stackpair composites (seed 0); set --n" in capsys.readouterr().err


def _composite_folder(tmp_path: Path, label: int) -> Path:
    """Six stack-mix composites written as a manifest folder, one label replaced by ``label``."""
    comp = DATASETS.get("fashion-stackmix").build(n=6, seed=0)
    folder = tmp_path / "mix"
    export_composites(comp.images, comp.labels, FASHION_CLASSES, folder, kind="fashion-stackmix")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["items"][4]["label"] = label
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_manifest_label_outside_the_models_classes(tmp_path: Path, model: Path) -> None:
    folder = _composite_folder(tmp_path, 10)
    # an 11th class name: the reader takes label 10 (issue 22: labels index class_names), the
    # 10-class model does not
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(
        json.dumps({**manifest, "class_names": [*manifest["class_names"], "extra"]})
    )
    with pytest.raises(CamwallError, match=rf"--dataset {folder}: label 10 is outside 0\.\.9"):
        evaluate(model, str(folder), device="cpu")


def test_negative_manifest_label_is_refused_by_the_reader(tmp_path: Path, model: Path) -> None:
    folder = _composite_folder(tmp_path, -1)
    with pytest.raises(
        CamwallError, match=r"manifest.json: item 4: label -1 is not a non-negative"
    ):
        evaluate(model, str(folder), device="cpu")


def test_nan_weights_are_refused_on_load(tmp_path: Path, model: Path) -> None:
    net, meta = load_model(model)
    with torch.no_grad():
        next(p for p in net.parameters() if p.dim() > 1).fill_(float("nan"))
    bad = Path(save_model(net, tmp_path / "nan.safetensors", meta))
    with pytest.raises(CamwallError, match=r"nan.safetensors: 0.weight has \d+ NaN"):
        evaluate(bad, "fashion-canvases", n=8, device="cpu")


def test_a_nan_model_does_not_pass(tmp_path: Path, model: Path, capsys) -> None:
    # Finite weights (so the load check passes) whose activations overflow float32 to inf.
    net, meta = load_model(model)
    with torch.no_grad():
        next(p for p in net.parameters() if p.dim() > 1).fill_(1e38)
    bad = Path(save_model(net, tmp_path / "nan.safetensors", meta))
    with pytest.raises(CamwallError, match=r"nan.safetensors: the loss on fashion-canvases is nan"):
        evaluate(bad, "fashion-canvases", n=8, device="cpu")
    args = ["evaluate", "--model", str(bad), "--dataset", "fashion-canvases", "--n", "8"]
    assert main([*args, "--device", "cpu"]) == 2
    assert "NaN/inf" in capsys.readouterr().err


def test_grid_dataset_with_a_single_output_model_is_one_line(model: Path, capsys) -> None:
    # issue 22 §5: was a RuntimeError traceback from reshaping 10 logits into 4 cells
    args = ["evaluate", "--model", str(model), "--dataset", "fashion-grid", "--n", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"camwall: error: --dataset fashion-grid has 4 labels per image (one per grid cell), "
        f"but --model {model}"
    )
    assert "is a single-output model" in err[0]
    assert "--preset fashion-grid-vgg" in err[0]
    assert "fashion-canvases" in err[0]
    with pytest.raises(CamwallError, match="--dataset fashion-grid has 4 labels per image"):
        evaluate(model, "fashion-grid", n=4, device="cpu")


def test_single_label_dataset_with_a_grid_model_is_refused() -> None:
    from camwall.weights import shipped_model

    grid = shipped_model("fashion-grid-vgg", "walled")
    with pytest.raises(CamwallError, match=r"is a grid model .*--dataset fashion-grid\.$"):
        evaluate(grid, "fashion-stackmix", n=4, device="cpu")
    assert evaluate(grid, "fashion-grid", n=4, device="cpu").n == 16  # 4 mosaics x 4 cells
