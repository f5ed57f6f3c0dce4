"""Explainers from several threads on one model: each call takes the model's lock and puts the
model's state back, so every thread gets its single-thread maps and the model is left as found."""

from __future__ import annotations

import pytest
import torch
from explainer_refs import tiny_walled
from testkit import run_in_threads

from camwall.cams import compute_cams
from camwall.explainers import explain


def _dirty():
    """Train mode with one submodule in eval and one frozen parameter."""
    model = tiny_walled()
    model.train()
    model[6].eval()
    model[0].bias.requires_grad_(False)
    return model


def _state(model: torch.nn.Module) -> tuple[list[bool], list[bool], int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        hooks,
    )


X = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
TARGETS = [0, 1, 2]


@pytest.mark.parametrize("run", range(3))
def test_four_threads_explaining_with_gradcam(run):
    model = _dirty()
    before = _state(model)
    want = explain(model, X, "gradcam", TARGETS)
    got = run_in_threads([lambda: explain(model, X, "gradcam", TARGETS)] * 4)
    for maps in got:
        torch.testing.assert_close(maps, want, rtol=0, atol=0)  # same call, same kernels
    assert _state(model) == before


CALLS = {
    "compute_cams": lambda m: compute_cams(m, X, "3", "gradcam", TARGETS)["gradcam"],
    "captum:Saliency": lambda m: explain(m, X, "captum:Saliency", TARGETS),
    "gradcam:GradCAM": lambda m: explain(m, X, "gradcam:GradCAM", TARGETS),
    "torchcam:GradCAM": lambda m: explain(m, X, "torchcam:GradCAM", TARGETS),
}


@pytest.mark.parametrize("run", range(3))
def test_threads_mixing_the_engine_and_peer_libraries(run):
    model = _dirty()
    before = _state(model)
    want = {name: call(model) for name, call in CALLS.items()}
    assert _state(model) == before
    names = list(CALLS) * 2
    got = run_in_threads([lambda name=name: CALLS[name](model) for name in names])
    for name, maps in zip(names, got, strict=True):
        torch.testing.assert_close(maps, want[name], rtol=0, atol=0, msg=name)
    assert _state(model) == before


@pytest.mark.parametrize("name", ["captum:NoiseTunnel", "gradcam:RandomCAM"])
def test_seeded_explainers_on_two_models_in_threads_keep_their_streams(name):
    """A seeded peer explainer draws from the global generators: threads on two different
    models (two locks) must not interleave their seeded draws."""
    models = [tiny_walled(seed=1), tiny_walled(seed=2)]
    want = [explain(m, X, name, TARGETS, seed=5) for m in models]
    calls = [lambda m=m: [explain(m, X, name, TARGETS, seed=5) for _ in range(10)] for m in models]
    for _ in range(3):
        for runs, expected in zip(run_in_threads(calls), want, strict=True):
            for maps in runs:
                torch.testing.assert_close(maps, expected, rtol=0, atol=0)
