import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from bench_tiny import torchrun_two_ranks
from PIL import Image

from camwall.bench import STORE_NAME, Store
from camwall.bench import _inputs as inputs
from camwall.cli import main
from camwall.walls import create_model, save_model

FASHION = "/usr/share/datasets/fashion-mnist"


def _ckpt(tmp_path, name="walled", walled=True):
    torch.manual_seed(0)
    model = create_model("fashion-vgg", walled=walled)
    return save_model(model, tmp_path / name, {"class_names": [f"c{i}" for i in range(10)]})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _ckpt(tmp_path_factory.mktemp("ckpt"))


def _err(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "gradcan"], "unknown method 'gradcan'. Did you mean 'gradcam'?"),
        (["--methods", "gradcam,gradcam"], "lists a method twice"),
        (["--images", "0"], "--images: must be at least 1, got 0"),
        (["--model", "fashion-vgx"], "Did you mean 'fashion-vgg'?"),
        (["--model", "fashion-vgg", "--wall", "9:rows=1:"], "--wall applies to torchvision"),
        (["--model", "missing/thing.safetensors"], "not found"),
        (["--dataset", "fashion-stackmixx"], "Did you mean 'fashion-stackmix'"),
        (["--dataset", "./no/such/folder"], "folder not found"),
        (["--target-layer", "features.99"], "features.99"),
        (["--weights", "w.safetensors"], "--weights needs a registry --model"),
    ],
)
def test_bad_input_clear_error(capsys, tmp_path, ckpt, argv, message):
    if "--model" not in argv and "--weights" not in argv:
        argv = ["--model", str(ckpt), *argv]
    err = _err(capsys, ["bench", "--out", str(tmp_path / "o"), "--images", "2", *argv])
    assert message in err


def test_unwritable_out_fails_before_any_work(capsys, tmp_path, ckpt, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(inputs, "resolve_model", boom)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _err(capsys, ["bench", "--model", str(ckpt), "--out", str(blocker / "out")])
    assert f"--out: {blocker / 'out'}: cannot write there" in err


def test_checkpoint_without_wall_is_refused(capsys, tmp_path):
    plain = _ckpt(tmp_path, "plain", walled=False)
    err = _err(capsys, ["bench", "--model", str(plain), "--out", str(tmp_path / "o")])
    assert "has no wall" in err
    assert "--baseline" in err


def test_an_image_folder_tree_is_read_at_the_model_size(capsys, tmp_path, ckpt):
    # A plain ImageFolder tree is resized and centre-cropped to the model's input (a folder
    # with a manifest is not: tests/bench/test_bench_own.py).
    for cls in ("a", "b"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(2):
            arr = (np.random.default_rng(i).random((32, 32)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "tree" / cls / f"{i}.png")
    argv = ["bench", "--model", str(ckpt), "--dataset", str(tmp_path / "tree")]
    assert main([*argv, "--out", str(tmp_path / "o"), "--methods", "gradcam"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["dataset_info"]["tree"]["read_at"] == "resized + centre-cropped to 64"
    assert (
        summary["datasets"]["tree"]["gradcam"]["n"]
        + summary["datasets"]["tree"]["gradcam"]["empty"]
        == 4
    )


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")
def test_cli_end_to_end_default_pair_and_resume(capsys, tmp_path, monkeypatch):
    # --retrain trains or loads the fashion-vgg pair; here the cache is replaced by two
    # untrained checkpoints so that the test stays fast.
    walled = _ckpt(tmp_path, "walled")
    baseline = _ckpt(tmp_path, "baseline", walled=False)
    calls = []

    def fake_cached_pair(preset, cache_dir=None, **kw):
        calls.append(preset)
        return walled, baseline

    import camwall.train

    monkeypatch.setattr(camwall.train, "cached_pair", fake_cached_pair)
    out = tmp_path / "out"
    argv = ["bench", "--retrain", "--out", str(out), "--images", "3"]
    argv += ["--methods", "gradcam,hirescam,uniform"]
    assert main([*argv, "--no-progress"]) == 0
    assert calls == ["fashion-vgg"]
    captured = capsys.readouterr()
    assert "| hirescam | 0.0 ± 0.0 |" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    # the default run: the (retrained) pair, and the shipped grid model on fashion-grid
    assert set(summary["datasets"]) == {"fashion-stackmix", "fashion-stackpair"}
    assert summary["config"]["datasets"][-1] == "fashion-grid"
    assert summary["dead_zone"][summary["model"]]["input_size"] == [64, 64]
    assert summary["model_info"][summary["model"]]["wall_check"]["ok"] is True
    assert len(summary["accuracy"]) == 3  # walled, baseline and the grid model
    with Store(out / STORE_NAME) as store:
        assert store.count() == 3 * 3 * 3
    # --resume with the same options adds nothing; with other options it is refused early.
    assert main([*argv, "--no-progress", "--resume"]) == 0
    with Store(out / STORE_NAME) as store:
        assert store.count() == 27
        assert len(store.runs()) == 2
    capsys.readouterr()
    err = _err(capsys, [*argv[:-1], "gradcam", "--resume"])
    assert "different configuration (methods" in err
    # camwall report regenerates from the store.
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 10_000
    assert _err(capsys, ["report", str(tmp_path / "nothing")]).count("no such folder") == 1


CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_report_renders_headless(tiny_run, tmp_path):
    png = tmp_path / "shot.png"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        (tiny_run / "report.html").resolve().as_uri(),
    ]
    subprocess.run(args, capture_output=True, timeout=120, check=False)
    assert png.exists(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert img.shape == (2000, 1280)
    assert img.std() > 20  # not blank: text, tables and figures
    assert (img < 80).mean() > 0.01  # dark ink present
    assert (img > 240).mean() > 0.3  # and a white page around it


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")
def test_cli_under_torchrun_equals_single_process(tmp_path, ckpt):
    args = ["--model", str(ckpt), "--dataset", "fashion-stackmix", "--images", "5"]
    args += ["--methods", "gradcam,hirescam,random", "--batch-size", "2", "--no-progress"]
    assert main(["bench", *args, "--out", str(tmp_path / "one")]) == 0
    two = ["-m", "camwall", "bench", *args, "--out", str(tmp_path / "two"), "--device", "cpu"]
    res = torchrun_two_ranks(two, port_base=30500, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    with Store(tmp_path / "one" / STORE_NAME) as a, Store(tmp_path / "two" / STORE_NAME) as b:
        ra, rb = a.results(), b.results()
    assert len(ra) == len(rb) == 15
    for x, y in zip(ra, rb):
        assert (x["image"], x["method"]) == (y["image"], y["method"])
        assert x["wall_leakage"] == pytest.approx(y["wall_leakage"], abs=1e-6, nan_ok=True)


def test_default_pair_is_not_trained_under_torchrun(tmp_path):
    from types import SimpleNamespace

    from camwall.bench.cli import _default_pair
    from camwall.errors import CamwallError

    args = SimpleNamespace(cache_dir=str(tmp_path), device="cpu", retrain=True)
    with pytest.raises(CamwallError, match="not trained under torchrun"):
        _default_pair(args, SimpleNamespace(world=2, rank=1))
