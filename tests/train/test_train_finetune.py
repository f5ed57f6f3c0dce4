"""`camwall train --init`: fine-tuning a wall into trained weights (camwall.train._init)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from camwall.cli import main
from camwall.errors import CamwallError
from camwall.train import train
from camwall.train._init import load_init, load_unwalled, resolve_init
from camwall.train._refit import refit_walled_layers
from camwall.walls import (
    WalledLinear,
    WallSpec,
    create_model,
    dead_zone,
    load_model,
    verify_wall,
    walled_torchvision,
)
from camwall.weights import shipped_model

SHIPPED = "shipped:fashion-vgg-baseline"
# fashion-vgg width 8: layer 11 reads the 8 x 16 x 16 map; its wall is feature rows 7..15
# (camwall.walls.fashion_vgg's docstring), so those columns of 11.weight must be 0.
HEAD, FEATURES, DEAD_ROWS = "11.weight", (8, 16, 16), slice(7, None)
SMALL = {"train_limit": 128, "val_limit": 300, "batch_size": 64, "epochs": 1}


def _baseline() -> dict[str, torch.Tensor]:
    return load_file(str(shipped_model("fashion-vgg", "baseline")))


def _walled_by_hand(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The baseline's tensors with the wall's columns of the head set to 0, written out from
    the architecture's description (not by camwall's wall code)."""
    out = {k: v.clone() for k, v in state.items()}
    head = out[HEAD].view(-1, *FEATURES)
    head[:, :, DEAD_ROWS, :] = 0
    return out


def test_init_loads_the_baseline_exactly_and_zeroes_only_the_wall() -> None:
    model = create_model("fashion-vgg", walled=True, width=8)
    zeroed = load_init(model, resolve_init(SHIPPED))
    base, expected = _baseline(), _walled_by_hand(_baseline())
    got = model.state_dict()
    assert set(got) == set(base)
    for key in base:
        assert torch.equal(got[key], expected[key]), key
    assert zeroed == int(torch.count_nonzero(base[HEAD].view(-1, *FEATURES)[:, :, DEAD_ROWS]))
    assert zeroed > 0
    assert not torch.equal(got[HEAD], base[HEAD])


def test_init_maps_torchvision_names_moved_by_the_wall(tmp_path: Path) -> None:
    torch.manual_seed(1)
    plain = torchvision.models.resnet18(weights=None, num_classes=3)
    state = {k: v.contiguous() for k, v in plain.state_dict().items()}
    save_file(state, str(tmp_path / "plain.safetensors"))
    model = walled_torchvision("resnet18", ["layer3:rows=1:"], num_classes=3, seed=0)
    assert load_init(model, resolve_init(str(tmp_path / "plain.safetensors"))) == 0
    got = model.state_dict()
    for key, value in state.items():
        moved = f"layer3.0.{key[len('layer3.') :]}" if key.startswith("layer3.") else key
        assert torch.equal(got[moved], value), key


def test_another_class_count_keeps_a_fresh_classifier_and_loads_the_rest(tmp_path) -> None:
    """A 7-class file into a 3-class walled resnet18: the trunk is the file's, ``fc`` stays the
    model's fresh initialization and is named; any other shape mismatch is still refused."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None, num_classes=7).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "seven.safetensors"))
    model = walled_torchvision("resnet18", ["layer3:rows=1:"], num_classes=3, seed=0)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    assert load_unwalled(model, resolve_init(str(tmp_path / "seven.safetensors"))) == [
        "fc.bias",
        "fc.weight",
    ]
    got = model.state_dict()
    for key, value in state.items():
        moved = f"layer3.0.{key[len('layer3.') :]}" if key.startswith("layer3.") else key
        want = fresh[key] if key.startswith("fc.") else value
        assert torch.equal(got[moved], want), key
    state["conv1.weight"] = state["conv1.weight"][:, :2]  # a trunk mismatch: refused
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CamwallError, match="does not fit"):
        load_unwalled(model, resolve_init(str(tmp_path / "bad.safetensors")))


def test_init_keeps_the_vit_attention_masks_of_the_walled_model(tmp_path: Path) -> None:
    plain = create_model("fashion-vit", walled=False, conv_stem=True)
    torch.save(plain.state_dict(), tmp_path / "vit.pt")
    model = create_model("fashion-vit", walled=True, conv_stem=True)
    masks = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".allowed")}
    load_init(model, resolve_init(str(tmp_path / "vit.pt")))
    got = model.state_dict()
    assert masks
    assert all(bool(plain.state_dict()[k].all()) for k in masks)  # the unwalled: all True
    for key, value in plain.state_dict().items():
        assert torch.equal(got[key], masks.get(key, value)), key
    assert all(not bool(masks[k].all()) for k in masks)  # the wall's masks, not all-True ones


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("finetune") / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    argv = ["train", "--preset", "fashion-vgg", "--init", SHIPPED, *flags, "--out", str(out)]
    from contextlib import redirect_stdout
    from io import StringIO

    buf = StringIO()
    with redirect_stdout(buf):
        assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    return out, buf.getvalue()


def _independent_top1(n: int) -> tuple[int, int]:
    """(correct, n) of the hand-walled baseline on the first ``n`` test canvases."""
    from camwall.data import fashion_canvases

    model = create_model("fashion-vgg", walled=True, width=8)
    model.load_state_dict(_walled_by_hand(_baseline()))
    data = fashion_canvases("test", seed=0, augment=False)
    x = torch.stack([data[i][0] for i in range(n)])
    y = torch.tensor([int(data[i][1]) for i in range(n)])
    with torch.no_grad():
        correct = int((model.eval()(x).argmax(1) == y).sum())
    return correct, n


def test_accuracy_after_insertion_is_reported_and_matches_an_independent_evaluation(
    cli_run: tuple[Path, str],
) -> None:
    out, printed = cli_run
    inserted = json.loads((out / "manifest.json").read_text())["init"]["inserted"]
    correct, n = _independent_top1(SMALL["val_limit"])
    assert inserted["n"] == n
    assert round(inserted["val_top1"] * n) == correct
    assert f"before fine-tuning: val top-1 {100 * correct / n:.2f}% ({n} images)" in printed


def test_accuracy_after_the_refit_is_that_of_the_hand_walled_baseline_refitted(
    cli_run: tuple[Path, str],
) -> None:
    """The run refits on its first ``train_limit`` training canvases (epoch 0's placements),
    from the baseline's own head weights: the same refit done here on the hand-walled baseline
    gives the recorded accuracy."""
    from torch.utils.data import Subset

    from camwall.data import fashion_canvases

    out, printed = cli_run
    refit = json.loads((out / "manifest.json").read_text())["init"]["refit"]
    model = create_model("fashion-vgg", walled=True, width=8)
    base = _baseline()
    model.load_state_dict(_walled_by_hand(base))
    train_set = fashion_canvases("train", seed=0, augment=True)
    train_set.set_epoch(0)
    data = Subset(train_set, range(SMALL["train_limit"]))
    originals = {"11": (base[HEAD], base["11.bias"])}
    refit_walled_layers(model, originals, data, refit["ridge"], 256, torch.device("cpu"))
    n = SMALL["val_limit"]
    test = fashion_canvases("test", seed=0, augment=False)
    x = torch.stack([test[i][0] for i in range(n)])
    y = torch.tensor([int(test[i][1]) for i in range(n)])
    with torch.no_grad():
        correct = int((model.eval()(x).argmax(1) == y).sum())
    assert round(refit["refitted"]["val_top1"] * n) == correct
    assert f"head refit on {SMALL['train_limit']} training examples" in printed


def test_manifest_and_checkpoint_record_the_init_source_and_hash(
    cli_run: tuple[Path, str],
) -> None:
    out, _ = cli_run
    path = shipped_model("fashion-vgg", "baseline")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["init"]["source"] == SHIPPED
    assert manifest["init"]["sha256"] == sha
    assert Path(manifest["init"]["path"]) == path
    assert manifest["config"]["init"] == SHIPPED
    assert manifest["config"]["init_sha256"] == sha
    _, meta = load_model(out / "walled.safetensors")
    assert meta["training"]["init"]["sha256"] == sha
    assert meta["arch_kwargs"]["walled"] is True
    assert list(manifest["checkpoints"]) == ["walled"]  # the init is the baseline
    refit = manifest["init"]["refit"]  # the default refit, on the run's (limited) training set
    assert refit["examples"] == SMALL["train_limit"]
    assert refit["layers"] == ["11"]
    assert refit["refitted"]["n"] == SMALL["val_limit"]
    assert meta["training"]["init"]["refit"] == refit


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "walled.safetensors"))


def test_a_fine_tune_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    over = {**SMALL, "init": SHIPPED}
    whole = train("fashion-vgg", over, tmp_path / "whole", device="cpu", progress=False)
    train("fashion-vgg", {**over, "max_steps": 1}, tmp_path / "cut", device="cpu", progress=False)
    again = train("fashion-vgg", over, tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert whole.final("walled")["step"] == again.final("walled")["step"] == 2
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.init == whole.init


def test_resume_refuses_an_init_file_that_changed(tmp_path: Path) -> None:
    weights = tmp_path / "base.safetensors"
    save_file(_baseline(), str(weights))
    over = {**SMALL, "init": str(weights), "max_steps": 1}
    train("fashion-vgg", over, tmp_path / "run", device="cpu", progress=False)
    changed = {k: v + 1e-3 for k, v in _baseline().items()}
    save_file(changed, str(weights))
    with pytest.raises(Exception, match="init_sha256"):
        train(
            "fashion-vgg",
            {**over, "max_steps": None},
            tmp_path / "run",
            device="cpu",
            progress=False,
            resume=True,
        )


def _cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(["train", *argv, "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert err.startswith("camwall: error: ")
    return err


def test_a_missing_init_file_is_one_clear_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.safetensors"
    err = _cli_error(capsys, "--preset", "fashion-vgg", "--init", str(missing))
    assert f"--init {missing}: no such file" in err
    assert "shipped:fashion-vgg-baseline" in err


def test_an_unknown_shipped_name_is_one_clear_error(capsys) -> None:
    err = _cli_error(capsys, "--preset", "fashion-vgg", "--init", "shipped:fashion-vgg-basline")
    assert "Did you mean 'fashion-vgg-baseline'" in err


def test_a_state_dict_of_another_architecture_is_one_clear_error(tmp_path: Path, capsys) -> None:
    other = create_model("fashion-resnet", walled=False, width=8)
    save_file(dict(other.state_dict()), str(tmp_path / "resnet.safetensors"))
    err = _cli_error(
        capsys, "--preset", "fashion-vgg", "--init", str(tmp_path / "resnet.safetensors")
    )
    assert "does not fit fashion-vgg" in err
    assert "missing" in err
    assert "unexpected" in err


def test_an_unknown_torchvision_arch_is_one_clear_error(capsys) -> None:
    err = _cli_error(
        capsys, "--init", SHIPPED, "--arch", "torchvision:resnet81", "--wall", "layer3:rows=1:"
    )
    assert "resnet81" in err
    assert "resnet18" in err


def test_an_unknown_library_prefix_is_one_clear_error(capsys) -> None:
    err = _cli_error(capsys, "--init", SHIPPED, "--arch", "keras:resnet18")
    assert "torchvision, timm" in err


def test_init_with_baseline_is_one_clear_error(capsys) -> None:
    err = _cli_error(capsys, "--preset", "fashion-vgg", "--init", SHIPPED, "--baseline")
    assert "drop --baseline" in err


def test_train_needs_a_preset_or_init(capsys) -> None:
    err = _cli_error(capsys, "--epochs", "1")
    assert "--preset NAME" in err
    assert "--init WEIGHTS" in err


def _image_folder(root: Path) -> Path:
    """Two classes of three 32 x 32 PNGs: dark and bright noise."""
    g = torch.Generator().manual_seed(0)
    for label, (low, high) in enumerate(((0, 100), (150, 255))):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = torch.randint(low, high, (32, 32, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def test_imagefolder_fine_tune_of_a_torchvision_resnet_keeps_an_exact_wall(
    tmp_path: Path, capsys
) -> None:
    torch.manual_seed(2)
    plain = torchvision.models.resnet18(weights=None, num_classes=2)
    init = tmp_path / "resnet18.pt"
    torch.save(plain.state_dict(), init)
    out = tmp_path / "run"
    argv = [
        "train", "--init", str(init), "--arch", "torchvision:resnet18",
        "--wall", "conv1:rows=8:", "--data", str(_image_folder(tmp_path / "images")),
        "--num-classes", "2", "--image-size", "32", "--batch-size", "2", "--max-steps", "1",
        "--out", str(out), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "before fine-tuning: val top-1 n/a (no validation data)" in capsys.readouterr().out
    model, meta = load_model(out / "walled.safetensors")
    assert meta["arch"] == "torchvision"
    assert meta["training"]["steps"] == 1
    zone = dead_zone(model, (3, 32, 32))
    assert 0 < int(zone.sum()) < 32 * 32
    check = verify_wall(model, zone, trials=2)
    assert check.ok, check
    trained = model.state_dict()  # one step moved the weights off the init's
    assert not torch.equal(trained["conv1.0.weight"], plain.state_dict()["conv1.weight"])


def test_fine_tuning_defaults_come_before_the_options() -> None:
    from camwall.train import FINETUNE_DEFAULTS, PRESETS, resolve_config

    fine = resolve_config("fashion-vgg", {"init": SHIPPED})
    assert fine.epochs == FINETUNE_DEFAULTS["fashion-vgg"]["epochs"] == 1
    assert fine.refit == FINETUNE_DEFAULTS["fashion-vgg"]["refit"] > 0
    assert fine.head_lr_scale == FINETUNE_DEFAULTS["fashion-vgg"]["head_lr_scale"] == 0.3
    assert resolve_config("fashion-vgg", {"init": SHIPPED, "refit": 0}).refit == 0
    assert resolve_config("fashion-vgg", {"epochs": 3}).refit == 0  # from scratch: no refit
    assert fine.lr == FINETUNE_DEFAULTS["fashion-vgg"]["lr"] < PRESETS.get("fashion-vgg").lr
    assert resolve_config("fashion-vgg", {"init": SHIPPED, "epochs": 3}).epochs == 3
    assert resolve_config("fashion-vgg", {"epochs": 3}).lr == PRESETS.get("fashion-vgg").lr
    other = resolve_config("fashion-resnet", {"init": SHIPPED})  # no entry: a tenth of the lr
    assert other.lr == pytest.approx(PRESETS.get("fashion-resnet").lr / 10)
    assert resolve_config(None, {"init": SHIPPED}).dataset == "imagefolder"


def test_runs_from_scratch_keep_their_config_keys() -> None:
    """The fields added for fine-tuning stay out of a config's dict (and its hash) while unset,
    so the cache keys and shipped manifests of runs from scratch do not change."""
    from camwall.train import PRESETS, resolve_config

    plain = PRESETS.get("fashion-vgg").to_dict()
    assert not {"walls", "init", "init_sha256"} & set(plain)
    shipped = json.loads(shipped_model("fashion-vgg", "walled").with_suffix(".json").read_text())
    assert set(shipped["training"]["config"]) == set(plain)
    fine = resolve_config("fashion-vgg", {"init": SHIPPED}).to_dict()
    assert fine["init"] == SHIPPED


def _tiny_walled(walls: object, seed: int = 0) -> torch.nn.Module:
    """Flatten + a WalledLinear over a 2 x 4 x 4 map (6 outputs)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(), WalledLinear(32, 6, feature_shape=(2, 4, 4), wall=walls)
    )


def _lstsq_oracle(x: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, ridge: float):
    """(W_open, b) by ``torch.linalg.lstsq`` on the design matrix itself (float64): the ridge as
    ``sqrt(penalty) * I`` rows appended under ``[x_open, 1]`` (the bias unpenalised)."""
    z = torch.cat([x[:, keep], torch.ones(len(x), 1, dtype=x.dtype)], 1)
    k = int(keep.sum())
    penalty = ridge * float((x[:, keep] ** 2).sum(0).mean())
    rows = torch.cat(
        [penalty**0.5 * torch.eye(k, dtype=x.dtype), torch.zeros(k, 1, dtype=x.dtype)], 1
    )
    a = torch.cat([z, rows])
    b = torch.cat([target, torch.zeros(k, target.shape[1], dtype=x.dtype)])
    theta = torch.linalg.lstsq(a, b).solution
    return theta[:-1].T, theta[-1]


@pytest.mark.parametrize("ridge", [0.0, 0.3])
@pytest.mark.parametrize("per_output", [False, True])
def test_head_refit_equals_a_least_squares_fit_of_the_unwalled_outputs(
    ridge: float, per_output: bool
) -> None:
    from torch.utils.data import TensorDataset

    walls = (
        [WallSpec(rows=(2, None)), WallSpec(cols=(0, 1))]
        if per_output
        else WallSpec(rows=(2, None))
    )
    model = _tiny_walled(walls)
    layer = model[1]
    w0, b0 = torch.randn(6, 32), torch.randn(6)  # the "trained" unwalled layer
    g = torch.Generator().manual_seed(1)
    images = torch.randn(40, 2, 4, 4, generator=g).relu()
    x = images.flatten(1).double()
    refitted = refit_walled_layers(
        model,
        {"1": (w0, b0)},
        TensorDataset(images, torch.zeros(40)),
        ridge,
        16,
        torch.device("cpu"),
    )
    assert refitted == ["1"]
    target = x @ w0.double().T + b0.double()
    groups = layer.group_keep
    size = 6 // len(groups)
    for g_index, keep in enumerate(groups):
        rows = slice(g_index * size, (g_index + 1) * size)
        want_w, want_b = _lstsq_oracle(x, target[:, rows], keep, ridge)
        # float64 normal equations vs a float64 QR of the design matrix, then rounded to float32
        torch.testing.assert_close(
            layer.weight[rows][:, keep].double(), want_w, rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(layer.bias[rows].double(), want_b, rtol=1e-5, atol=1e-5)
        assert bool((layer.weight[rows][:, ~keep] == 0).all())  # the wall stays exact


def test_head_refit_gives_a_dead_feature_weight_zero() -> None:
    """A feature that is 0 on every example makes Z^T Z singular; gelsd's minimum-norm solution
    gives it weight 0 (and the fit of the others is that of the reduced problem)."""
    from torch.utils.data import TensorDataset

    model = _tiny_walled(WallSpec(rows=(2, None)))
    images = torch.randn(30, 2, 4, 4, generator=torch.Generator().manual_seed(3)).relu()
    images[:, 0, 0, 0] = 0  # feature 0: open, always 0
    w0, b0 = torch.randn(6, 32), torch.randn(6)
    data = TensorDataset(images, torch.zeros(30))
    refit_walled_layers(model, {"1": (w0, b0)}, data, 0.0, 30, torch.device("cpu"))
    assert bool((model[1].weight[:, 0] == 0).all())
    assert bool(torch.isfinite(model[1].weight).all())


def test_refit_fields_are_validated_and_stay_out_of_configs_without_one() -> None:
    from camwall.errors import CamwallError
    from camwall.train import PRESETS, resolve_config

    base = PRESETS.get("fashion-vgg")
    assert "refit" not in base.to_dict()
    assert "refit_ridge" not in base.to_dict()
    fine = resolve_config("fashion-vgg", {"init": SHIPPED, "refit": 500}).to_dict()
    assert fine["refit"] == 500
    assert fine["refit_ridge"] == base.refit_ridge
    for bad in ({"refit": -1}, {"refit_ridge": -0.5}):
        with pytest.raises(CamwallError, match=next(iter(bad))):
            resolve_config("fashion-vgg", {"init": SHIPPED, **bad})
