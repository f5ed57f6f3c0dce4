"""camwall.quantus.WallLeakage: a Quantus 0.6 metric whose score is camwall's mu per sample."""

from __future__ import annotations

import importlib
import math
import sys

import numpy as np
import pytest
import quantus

from camwall.errors import CamwallError
from camwall.explainers import explain
from camwall.metrics import wall_leakage
from camwall.quantus import WallLeakage, explain_func


@pytest.fixture
def batch(vgg):
    model, x, dead = vgg
    y = model(x).argmax(1).numpy()
    s = np.broadcast_to(dead.numpy()[None, None], (2, 1, 64, 64)).astype(np.float32)
    return model, x, y, s, dead


def test_is_a_quantus_metric():
    metric = WallLeakage()
    assert isinstance(metric, quantus.Metric)
    assert metric.score_direction.value == "lower"


def test_saliency_and_gradcam_through_call(batch):
    model, x, y, s, dead = batch
    metric = WallLeakage()
    for name in ("captum:Saliency", "gradcam"):
        maps = explain(model, x, name, y.tolist())
        a = maps[:, None].numpy()
        got = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, s_batch=s)
        expected = wall_leakage(maps, dead).tolist()
        assert got == pytest.approx(expected, abs=1e-6), name
    # raw signed attributions are reduced with camwall's rule: |A| summed over channels
    raw = -np.asarray(explain(model, x, "captum:Saliency", y.tolist()))[:, None]
    assert metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=raw, s_batch=s) == [0, 0]


def test_through_quantus_evaluate_with_a_camwall_explain_func(batch):
    model, x, y, s, dead = batch
    results = quantus.evaluate(
        metrics={"wall": WallLeakage(return_aggregate=True)},
        # the keys are camwall explainer names: quantus passes them to explain_func as method
        xai_methods={"captum:Saliency": explain_func, "gradcam": explain_func},
        model=model,
        x_batch=x.numpy(),
        y_batch=y,
        s_batch=s,
        explain_func_kwargs={},
    )
    assert results["captum:Saliency"]["wall"] == [0.0]
    mu_gradcam = wall_leakage(explain(model, x, "gradcam", y.tolist()), dead)
    assert results["gradcam"]["wall"][0] == pytest.approx(float(np.nanmean(mu_gradcam)), abs=1e-6)
    assert results["gradcam"]["wall"][0] > 0.3


def test_all_zero_maps_are_scored_not_rejected(batch):
    """A faithful explainer on a fully dead input returns all zeros: Quantus' own metrics
    refuse that batch; WallLeakage scores it empty_score (NaN by default)."""
    model, x, y, s, _ = batch
    zeros = np.zeros((2, 1, 64, 64), dtype=np.float32)
    with pytest.raises(AssertionError, match="all equal to zero"):
        quantus.RelevanceMassAccuracy(disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y, a_batch=zeros, s_batch=s
        )
    got = WallLeakage()(model=model, x_batch=x.numpy(), y_batch=y, a_batch=zeros, s_batch=s)
    assert all(math.isnan(v) for v in got)
    assert WallLeakage(empty_score=0.0)(
        model=model, x_batch=x.numpy(), y_batch=y, a_batch=zeros, s_batch=s
    ) == [0.0, 0.0]
    # a constant map (Quantus rejects all-ones too) is empty after the min-max rule
    ones = np.ones_like(zeros)
    got = WallLeakage()(model=model, x_batch=x.numpy(), y_batch=y, a_batch=ones, s_batch=s)
    assert all(math.isnan(v) for v in got)


def test_one_empty_map_in_a_batch_drops_out_of_the_mean(batch):
    model, x, y, s, dead = batch
    maps = explain(model, x, "gradcam", y.tolist())
    a = maps[:, None].numpy().copy()
    a[1] = 0.0
    metric = WallLeakage(return_aggregate=True)
    got = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, s_batch=s)
    assert got == pytest.approx([float(wall_leakage(maps[:1], dead))], abs=1e-6)


def test_needs_the_dead_zone(batch):
    model, x, y, _, _ = batch
    with pytest.raises(CamwallError, match="s_batch"):
        WallLeakage()(model=model, x_batch=x.numpy(), y_batch=y, a_batch=np.ones((2, 1, 64, 64)))


def test_missing_quantus_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "quantus", None)
    monkeypatch.delitem(sys.modules, "camwall.quantus", raising=False)
    with pytest.raises(CamwallError, match=r"pip install 'camwall\[quantus\]'"):
        importlib.import_module("camwall.quantus")
    monkeypatch.undo()
    importlib.import_module("camwall.quantus")


def test_every_documented_dead_zone_form_gives_the_same_scores(batch):
    """H x W, B x H x W and B x 1 x H x W (the docs' forms) through Quantus' own call."""
    model, x, y, s, dead = batch
    a = np.asarray(explain(model, x, "gradcam", y.tolist()))[:, None]
    want = wall_leakage(explain(model, x, "gradcam", y.tolist()), dead).tolist()
    for form in (s, s[:, 0], dead.numpy().astype(np.float32)):
        got = WallLeakage()(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, s_batch=form)
        assert got == pytest.approx(want, abs=1e-6), form.shape
    small = s[0, 0, :32, :32]
    with pytest.raises(CamwallError, match=r"s_batch \(the dead zone\) has shape \(32, 32\)"):
        WallLeakage()(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, s_batch=small)


@pytest.mark.parametrize(("value", "what"), [(np.inf, "Inf"), (-np.inf, "Inf"), (np.nan, "NaN")])
def test_a_non_finite_attribution_is_refused_not_scored_nan(batch, value, what):
    model, x, y, s, _ = batch
    a = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)
    a[1, 0, 5, 7] = value
    with pytest.raises(CamwallError, match=f"holds {what} in sample 1 \\(1 of 2 samples\\)"):
        WallLeakage()(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, s_batch=s)


def test_an_empty_batch_is_one_clear_error(batch):
    model, x, y, s, _ = batch
    a = np.zeros((0, 1, 64, 64), np.float32)
    with pytest.raises(CamwallError, match=r"is empty \(B = 0\)"):
        WallLeakage()(model=model, x_batch=x[:0].numpy(), y_batch=y[:0], a_batch=a, s_batch=s[:0])
