"""``camwall bench --methods`` with explainer names, ``--explainer-option``, ``camwall methods``."""

import json

import pytest
import torch

from camwall.bench import Store
from camwall.cli import main
from camwall.walls import create_model, save_model

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("fashion-vgg", walled=True)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_model(model, folder / "walled", {"class_names": [f"c{i}" for i in range(10)]})


def _bench(ckpt, out, *extra):
    argv = ["bench", "--model", str(ckpt), "--out", str(out), "--images", "2"]
    argv += ["--dataset", "fashion-stackmix", "--no-progress", *extra]
    return main(argv)


def test_cli_mixed_names_options_grouping_and_resume(capsys, tmp_path, ckpt):
    out = tmp_path / "out"
    methods = "uniform,captum:Occlusion,gradcam,py:bench_explainers:grad,captum:Saliency"
    opts = ["--explainer-option", "captum:Occlusion.sliding_window_shapes=(1, 16, 16)"]
    opts += ["--explainer-option", "captum:Occlusion.strides=(1,8,8)"]
    assert _bench(ckpt, out, "--methods", methods, *opts) == 0
    printed = capsys.readouterr().out
    assert "| captum:Saliency | 0.0 ± 0.0 |" in printed
    assert "| py:bench_explainers:grad | 0.0 ± 0.0 |" in printed
    rows = [line.split(" | ")[0][2:] for line in printed.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "**CAM at a layer**",
        "gradcam",
        "**input gradient**",
        "py:bench_explainers:grad",
        "captum:Saliency",
        "**perturbation**",
        "captum:Occlusion",
        "**control**",
        "uniform (control)",
    ]
    with Store(out / "results.sqlite", readonly=True) as store:
        config = store.config()
        assert len(store.results()) == 5 * 2
    assert config["methods"] == methods.split(",")
    assert config["explainer_options"] == {
        "captum:Occlusion": {"sliding_window_shapes": [1, 16, 16], "strides": [1, 8, 8]}
    }
    # --resume with the same options continues; with other options it is refused.
    assert _bench(ckpt, out, "--methods", methods, *opts, "--resume") == 0
    capsys.readouterr()
    other = ["--explainer-option", "captum:Occlusion.sliding_window_shapes=(1,8,8)"]
    assert _bench(ckpt, out, "--methods", methods, *other, "--resume") == 2
    err = capsys.readouterr().err
    assert "different configuration (explainer_options" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "captum:Salency"], "Did you mean 'captum:Saliency'?"),
        (
            ["--methods", "captum:Saliency", "--explainer-option", "captum:Saliency.abs"],
            "is not NAME.KEY=VALUE",
        ),
        (
            ["--methods", "gradcam", "--explainer-option", "captum:Saliency.abs=False"],
            "'captum:Saliency' is not among --methods",
        ),
        (
            ["--methods", "captum:Occlusion", "--explainer-option", "captum:Occlusion.windw=3"],
            "captum:Occlusion has no option 'windw'",
        ),
        (["--methods", "py:bench_explainers:nan_map"], "returned NaN or Inf values"),
    ],
)
def test_cli_bad_explainer_input(capsys, tmp_path, ckpt, extra, message):
    assert _bench(ckpt, tmp_path / "o", *extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_methods_lists_every_name_with_family_and_source(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    heads = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert heads[:5] == [
        "cam (CAM at a layer):",
        "gradient (input gradient):",
        "perturbation:",
        "control:",
        "py:package.module:function  user  your callable (family: fn.camwall_family)",
    ]
    from camwall.explainers import EXPLAINERS

    listed = [line.split()[0] for line in text.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(EXPLAINERS.names())
    assert any(line.split()[:3] == ["captum:Saliency", "captum", "installed"] for line in
               text.splitlines())  # fmt: skip
    assert main(["bench", "--list-methods"]) == 0
    assert capsys.readouterr().out.strip() == text.strip()


def test_methods_json_pattern_and_missing_package(capsys, monkeypatch):
    import camwall.explainers._registry as reg

    monkeypatch.setattr(reg, "_available", lambda module: module != "torchcam")
    assert main(["methods", "torchcam:*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows][:2] == ["torchcam:CAM", "torchcam:GradCAM"]
    assert {(r["family"], r["source"], r["installed"], r["pip"]) for r in rows} == {
        ("cam", "torchcam", False, "pip install 'camwall[torchcam]'")
    }
    assert main(["methods", "torchcam:SSCAM"]) == 0
    assert "torchcam:SSCAM  torchcam          not installed: pip install 'camwall[torchcam]'" in (
        capsys.readouterr().out
    )
    assert main(["methods", "nothing*"]) == 2
    assert "no method matches 'nothing*'" in capsys.readouterr().err
