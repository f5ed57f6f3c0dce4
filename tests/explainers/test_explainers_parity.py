"""Every adapter against a direct call of its library on the same inputs (tiny walled CNN).

Deterministic methods: max abs diff <= 1e-5 after the same normalization. Seeded stochastic
methods: exactly equal (the adapter's ``seed=s`` against ``torch.manual_seed(s)`` and
``np.random.seed(s)`` before the direct call).
"""

from __future__ import annotations

import pytest
import torch
from explainer_refs import (
    CAPTUM_OPTIONS,
    GRADCAM_OPTIONS,
    TORCHCAM_OPTIONS,
    direct_captum,
    direct_gradcam,
    direct_torchcam,
)

from camwall.explainers import EXPLAINERS, explain
from camwall.explainers._captum import CAPTUM
from camwall.explainers._gradcam import GRADCAM_CLASSES
from camwall.explainers._torchcam import TORCHCAM_CLASSES

TARGETS = [1, 3, 0]
LAYER = "3"


def _split(options: dict) -> tuple[dict, int | None]:
    opts = dict(options)
    return opts, opts.pop("seed", None)


def _compare(name: str, ours: torch.Tensor, ref: torch.Tensor, seeded: bool) -> float:
    assert ours.shape == ref.shape
    diff = float((ours - ref).abs().max())
    if seeded and EXPLAINERS.get(name).stochastic:
        assert torch.equal(ours, ref), f"{name}: seeded run differs by {diff}"
    else:
        assert diff <= 1e-5, f"{name}: max abs diff {diff}"
    return diff


def test_the_issue_lists_are_registered():
    expected = {f"captum:{n}" for n in CAPTUM} | {f"torchcam:{n}" for n in TORCHCAM_CLASSES}
    expected |= {f"gradcam:{n}" for n in (*GRADCAM_CLASSES, "GuidedBackpropReLUModel")}
    assert expected <= set(EXPLAINERS.names())
    assert len(CAPTUM) == 15
    assert set(TORCHCAM_CLASSES) == {
        "CAM", "GradCAM", "GradCAMpp", "SmoothGradCAMpp", "XGradCAM", "LayerCAM",
        "ScoreCAM", "SSCAM", "ISCAM",
    }  # fmt: skip


def test_every_exported_grad_cam_class_is_covered():
    import pytorch_grad_cam

    exported = {n for n in dir(pytorch_grad_cam) if n[0].isupper()}
    not_cams = {
        "ActivationsAndGradients",
        "AblationLayer",
        "AblationLayerVit",
        "AblationLayerFasterRCNN",
        "DeepFeatureFactorization",  # concepts, not one map per target
    }
    assert exported - not_cams == {*GRADCAM_CLASSES, "GuidedBackpropReLUModel"}


@pytest.mark.parametrize("cls_name", list(CAPTUM))
def test_captum_matches_captum(cls_name, tiny):
    model, x, _ = tiny
    opts, seed = _split(CAPTUM_OPTIONS.get(cls_name, {}))
    layer = LAYER if EXPLAINERS.get(f"captum:{cls_name}").needs_layer else ""
    ours = explain(model, x, f"captum:{cls_name}", TARGETS, **CAPTUM_OPTIONS.get(cls_name, {}))
    ref = direct_captum(cls_name, model, x, TARGETS, layer=layer, seed=seed, **opts)
    _compare(f"captum:{cls_name}", ours, ref, seed is not None)


@pytest.mark.parametrize("cls_name", [*GRADCAM_CLASSES, "GuidedBackpropReLUModel"])
def test_gradcam_matches_pytorch_grad_cam(cls_name, tiny):
    model, x, _ = tiny
    opts, seed = _split(GRADCAM_OPTIONS.get(cls_name, {}))
    targets = None if cls_name == "FinerCAM" else TARGETS  # FinerCAM: the library's argmax
    ours = explain(model, x, f"gradcam:{cls_name}", targets, **GRADCAM_OPTIONS.get(cls_name, {}))
    if targets is None:
        targets = model(x).argmax(1).tolist()
    init = {k: opts.pop(k) for k in list(opts) if k == "num_scales"}
    ref = direct_gradcam(cls_name, model, x, targets, LAYER, seed=seed, init=init, **opts)
    _compare(f"gradcam:{cls_name}", ours, ref, seed is not None)


@pytest.mark.parametrize("cls_name", TORCHCAM_CLASSES)
def test_torchcam_matches_torchcam(cls_name, tiny):
    model, x, _ = tiny
    opts, seed = _split(TORCHCAM_OPTIONS.get(cls_name, {}))
    ours = explain(model, x, f"torchcam:{cls_name}", TARGETS, **TORCHCAM_OPTIONS.get(cls_name, {}))
    ref = direct_torchcam(cls_name, model, x, TARGETS, LAYER, seed=seed, **opts)
    _compare(f"torchcam:{cls_name}", ours, ref, seed is not None)


def test_native_cams_equal_compute_cams(tiny):
    from camwall.cams import METHODS, compute_cams

    model, x, _ = tiny
    for name in METHODS.names():
        if name in ("rollout", "legrad"):  # ViTs only (tests/cams/test_cams_rollout.py)
            continue
        # `cam` needs the layer right before the GAP head: the wall's output "4", not "3".
        layer = "4" if name == "cam" else LAYER
        ref = compute_cams(model, x, layer, [name], TARGETS, seed=0 if name == "opticam" else None)
        opts = {"seed": 0} if name == "opticam" else {}
        ours = explain(model, x, name, TARGETS, target_layer=layer, **opts)
        assert torch.equal(ours, ref[name]), name  # explain() calls compute_cams: same kernels


def test_integrated_gradients_cpu_chunks_equal_one_batch(tiny):
    """The adapter's default internal_batch_size=32 (3 x 40 steps = 120 inputs: four chunks)
    gives captum's one-batch result."""
    model, x, _ = tiny
    ours = explain(model, x, "captum:IntegratedGradients", TARGETS, n_steps=40)
    ref = direct_captum("IntegratedGradients", model, x, TARGETS, n_steps=40)
    assert float((ours - ref).abs().max()) <= 1e-5
