"""The fashion-vit preset and its shipped walled + baseline pair."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from camwall.errors import CamwallError
from camwall.train import PRESETS, train
from camwall.walls import dead_zone, load_model, verify_wall
from camwall.weights import SHIPPED_MODELS, shipped_manifest, shipped_model, shipped_pair

FASHION = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST missing")


def _rows(first_dead: int) -> torch.Tensor:
    zone = torch.zeros(64, 64, dtype=torch.bool)
    zone[first_dead:] = True
    return zone


def test_preset_is_the_fashion_pipeline_with_the_vit() -> None:
    config = PRESETS.get("fashion-vit")
    vgg = PRESETS.get("fashion-vgg")
    assert config.arch == "fashion-vit"
    assert config.dataset == vgg.dataset == "fashion-canvases"
    assert config.threads == 1
    assert config.arch_kwargs == {"conv_stem": True}
    assert SHIPPED_MODELS["fashion-vit"] == ("walled",)


@needs_fashion
@pytest.mark.slow  # about 20 s: builds the Fashion canvases
def test_a_few_steps_keep_the_wall(tmp_path: Path) -> None:
    tiny = {
        "arch_kwargs": {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
        "epochs": 1,
        "train_limit": 128,
        "val_limit": 64,
    }
    result = train("fashion-vit", tiny, tmp_path, device="cpu", progress=False, parallel=False)
    model, meta = load_model(result.checkpoints["walled"])
    zone = dead_zone(model, (1, 64, 64))
    assert torch.equal(zone, _rows(40))
    assert verify_wall(model, zone, trials=2).ok
    baseline, _ = load_model(result.checkpoints["baseline"])
    assert not dead_zone(baseline, (1, 64, 64)).any()
    assert meta["training"]["preset"] == "fashion-vit"


def test_shipped_vit_loads_verifies_and_records_its_training() -> None:
    path = shipped_model("fashion-vit", "walled")
    assert path.stat().st_size < 2_000_000
    model, meta = load_model(path)  # refuses a tampered mask
    training = meta["training"]
    assert training == shipped_manifest("fashion-vit", "walled")
    assert (training["preset"], training["variant"], training["completed"]) == (
        "fashion-vit",
        "walled",
        True,
    )
    assert training["config"] == PRESETS.get("fashion-vit").to_dict()
    assert training["test_accuracy"]["n"] == 10_000
    # 85.82% (15 epochs; see docs/walls.md): the target is >= 85%
    assert training["test_accuracy"]["top1"] == 0.8582
    assert training["test_accuracy"]["top1"] >= 0.85
    assert training["train_seconds"]["total"] > 0
    zone = dead_zone(model, (1, 64, 64))
    assert torch.equal(zone, _rows(40))
    check = verify_wall(model, zone)
    assert check.ok
    assert check.max_logit_change == 0.0
    with pytest.raises(CamwallError, match="no trained baseline model ships for preset"):
        shipped_model("fashion-vit", "baseline")
    with pytest.raises(CamwallError, match="no trained pair ships"):
        shipped_pair("fashion-vit")


@needs_fashion
@pytest.mark.slow
def test_shipped_vit_accuracy_equals_the_manifest() -> None:
    from camwall.train import evaluate

    result = evaluate(shipped_model("fashion-vit"), "fashion-canvases", device="cpu")
    recorded = shipped_manifest("fashion-vit")["test_accuracy"]
    assert result.n == 10_000
    assert result.top1 == recorded["top1"]  # deterministic: exactly


@needs_fashion
def test_shipped_vit_accuracy_on_the_first_1000_test_canvases() -> None:
    from camwall.train import evaluate

    result = evaluate(shipped_model("fashion-vit"), "fashion-canvases", n=1000, device="cpu")
    assert result.n == 1000
    assert result.top1 == shipped_manifest("fashion-vit")["test_accuracy"]["top1_first_1000"]
