"""The walled + baseline fashion-vgg pair shipped in the package, and `camwall bench` using it."""

from __future__ import annotations

import json
import os

import pytest

from camwall.bench.cli import GRID_SPEC
from camwall.cli import main
from camwall.weights import shipped_manifest, shipped_pair

FASHION = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST missing")


@pytest.mark.parametrize("variant", ["walled", "baseline"])
def test_shipped_files_load_with_their_manifest(variant):
    from camwall.walls import dead_zone, load_model, verify_wall

    walled, baseline = shipped_pair("fashion-vgg")
    path = walled if variant == "walled" else baseline
    assert path.stat().st_size < 1_000_000
    model, meta = load_model(path)  # refuses a tampered wall
    training = meta["training"]
    assert training == shipped_manifest("fashion-vgg", variant)
    assert (training["preset"], training["variant"], training["completed"]) == (
        "fashion-vgg",
        variant,
        True,
    )
    assert training["config"]["seed"] == 0
    assert {"torch", "camwall"} <= set(training["versions"])
    assert training["test_accuracy"]["dataset"] == "fashion-canvases"
    assert training["test_accuracy"]["n"] == 10_000
    zone = dead_zone(model, (1, 64, 64))
    if variant == "walled":
        assert zone.all(dim=1).nonzero().flatten().tolist() == list(range(39, 64))
        assert int(zone.sum()) == 25 * 64  # the bottom band of rows 39..63, nothing else
        check = verify_wall(model, zone)
        assert check.ok
        assert check.max_logit_change == 0.0
    else:
        assert not zone.any()


@needs_fashion
@pytest.mark.parametrize("variant", ["walled", "baseline"])
def test_shipped_accuracy_equals_the_manifest_on_the_test_canvases(variant):
    from camwall.train import evaluate

    walled, baseline = shipped_pair("fashion-vgg")
    result = evaluate(walled if variant == "walled" else baseline, "fashion-canvases", device="cpu")
    recorded = shipped_manifest("fashion-vgg", variant)["test_accuracy"]
    assert result.n == 10_000
    # Other CPU kernels move the logits by float32 rounding (eps x the ~2,300-term convolution
    # sums: under 1e-3 of the largest logit); on the shipped pair at most 6 of the 10,000
    # canvases have a top-2 margin that small, so at most 6 predictions can flip.
    assert abs(result.top1 - recorded["top1"]) <= 6 / 10_000
    assert result.top1 > 0.85


@needs_fashion
def test_bench_uses_the_shipped_pair_by_default(tmp_path, monkeypatch, capsys):
    import camwall.train

    def boom(*a, **kw):
        raise AssertionError("the default must not train or read the training cache")

    monkeypatch.setattr(camwall.train, "cached_pair", boom)
    out = tmp_path / "out"
    argv = ["bench", "--out", str(out), "--images", "2", "--methods", "hirescam,uniform"]
    assert main([*argv, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # the default run also tests the shipped grid model (bench.cli.DEFAULT_MODELS)
    assert summary["config"]["models"] == ["shipped:fashion-vgg:walled", GRID_SPEC]
    assert summary["config"]["datasets"][-1] == "fashion-grid"
    assert summary["config"]["baselines"] == ["shipped:fashion-vgg:baseline"]
    walled, _ = shipped_pair()
    info = summary["model_info"]["fashion-vgg-walled"]
    assert info["spec"] == str(walled)
    assert info["training"]["test_accuracy"] == shipped_manifest()["test_accuracy"]
    assert set(summary["accuracy"]) == {
        "fashion-vgg-walled",
        "fashion-vgg-baseline",
        "fashion-grid-vgg",
    }


def test_retrain_with_a_model_is_refused(capsys, tmp_path):
    assert main(["bench", "--retrain", "--model", "x", "--out", str(tmp_path)]) == 2
    assert "--retrain trains the default pair" in capsys.readouterr().err


@needs_fashion
@pytest.mark.slow
def test_retrain_lands_within_one_point_of_the_shipped_accuracy(tmp_path):
    """`camwall bench --retrain` trains through camwall.train.cached_pair (about 20 min on CPU)."""
    from camwall.train import cached_pair, evaluate

    walled, baseline = cached_pair("fashion-vgg", tmp_path, device="cpu", progress=False)
    for variant, path in (("walled", walled), ("baseline", baseline)):
        top1 = evaluate(path, "fashion-canvases", device="cpu").top1
        shipped = shipped_manifest("fashion-vgg", variant)["test_accuracy"]["top1"]
        assert abs(top1 - shipped) <= 0.01, (variant, top1, shipped)
