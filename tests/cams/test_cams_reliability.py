"""Reliability: threads, grad modes, non-finite weights and negative targets."""

from __future__ import annotations

import threading

import pytest
import torch
from testkit import hook_count, run_in_threads

from camwall.cams import METHODS, CamEngine, compute_cams
from camwall.errors import CamwallError

# cam needs a model ending in global average pooling + Linear (tests/cams/test_cams_methods.py)
ANY_MODEL = [
    n for n in METHODS.names() if n not in ("cam", "rollout", "legrad", "sess")
]  # rollout, legrad: ViTs only; sess: square patches

GRAD_AND_EIGEN = ["gradcam", "hirescam", "gradcampp", "layercam", "eigencam"]


@pytest.mark.parametrize("run", range(4))
def test_two_threads_on_one_model_get_the_single_thread_maps(run, make_tiny):
    model, layer, x = make_tiny("custom", seed=run, batch=2)
    model.train()
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x2 = torch.flip(x, dims=[3])
    want1 = compute_cams(model, x, layer, GRAD_AND_EIGEN)
    want2 = compute_cams(model, x2, layer, GRAD_AND_EIGEN)
    for _ in range(3):
        got1, got2 = run_in_threads(
            [
                lambda: compute_cams(model, x, layer, GRAD_AND_EIGEN),
                lambda: compute_cams(model, x2, layer, GRAD_AND_EIGEN),
            ]
        )
        for name in GRAD_AND_EIGEN:  # bit-equal by construction: the same call, same kernels
            torch.testing.assert_close(got1[name], want1[name], rtol=0, atol=0)
            torch.testing.assert_close(got2[name], want2[name], rtol=0, atol=0)
        assert model.training
        assert all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert hook_count(model) == 0


def test_threads_sharing_one_engine_and_a_with_block(make_tiny):
    """A shared engine and a ``with`` block in another thread: calls wait for each other."""
    model, layer, x = make_tiny("flat", batch=3)
    want = compute_cams(model, x, layer, ["gradcam", "scorecam"])
    engine = CamEngine(model, layer)

    def in_block() -> list[dict[str, torch.Tensor]]:
        with engine as cams:
            return [cams(x, ["gradcam", "scorecam"]) for _ in range(3)]

    def plain() -> list[dict[str, torch.Tensor]]:
        return [engine(x, ["gradcam", "scorecam"]) for _ in range(3)]

    for outs in run_in_threads([in_block, plain, in_block, plain]):
        for got in outs:
            for name, m in want.items():  # bit-equal by construction: the same call
                torch.testing.assert_close(got[name], m, rtol=0, atol=0)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert hook_count(model) == 0


def test_a_plain_forward_in_another_thread_is_not_captured(make_tiny):
    """While a ``with`` block is open, another thread's plain ``model(x)`` is not a capture."""
    model, layer, x = make_tiny("flat", batch=1)
    want = compute_cams(model, x, layer, "gradcam")["gradcam"]
    with CamEngine(model, layer) as cams:
        inside = threading.Event()
        done = threading.Event()

        def forward_loop() -> None:
            inside.set()
            while not done.is_set():
                with torch.no_grad():
                    model(x)

        t = threading.Thread(target=forward_loop)
        t.start()
        inside.wait()
        try:
            for _ in range(20):  # bit-equal by construction: the same call
                torch.testing.assert_close(cams(x, "gradcam")["gradcam"], want, rtol=0, atol=0)
        finally:
            done.set()
            t.join()


def test_fullgrad_does_not_count_another_threads_plain_forwards(make_tiny):
    """fullgrad records every biased layer once per pass: only this call's pass counts."""
    model, layer, x = make_tiny("flat", batch=2)
    want = compute_cams(model, x, layer, "fullgrad")["fullgrad"]
    done = threading.Event()
    started = threading.Event()

    def forward_loop() -> None:
        while not done.is_set():
            with torch.no_grad():
                model(x)
            started.set()

    t = threading.Thread(target=forward_loop)
    t.start()
    started.wait()
    try:
        for _ in range(30):
            got = compute_cams(model, x, layer, "fullgrad")["fullgrad"]
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    finally:
        done.set()
        t.join()


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_same_maps_under_no_grad_and_inference_mode(mode, make_tiny):
    model, layer, x = make_tiny("custom", batch=2)
    names = ANY_MODEL
    want = compute_cams(model, x, layer, names, opticam_iters=3)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        x_inner = x.clone()  # an inference tensor under inference_mode
        got = compute_cams(model, x_inner, layer, names, opticam_iters=3)
    assert torch.is_grad_enabled()
    for name in names:  # bit-equal by construction: the same pass (grad mode is the engine's)
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


@pytest.mark.parametrize("target", [-1, -5, -50, 5, 7])
def test_negative_or_too_large_class_index_is_refused(target, make_tiny):
    model, layer, x = make_tiny("flat", batch=2)  # 5 classes
    with pytest.raises(CamwallError, match=rf"targets\[1\] = {target} is out of range.*0 to 4"):
        compute_cams(model, x, layer, "gradcam", targets=[0, target])
    with pytest.raises(CamwallError, match=rf"targets\[0\] = {target} is out of range"):
        compute_cams(model, x, layer, "gradcam", targets=target)
    with pytest.raises(CamwallError, match="out of range"):
        compute_cams(model, x, layer, "gradcam", targets=torch.tensor([target, 0]))


@pytest.mark.parametrize("methods", [["gradcam"], ["eigencam"], ["scorecam", "ablationcam"]])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_before_the_layer_names_the_layer_and_parameter(bad, methods, make_tiny):
    model, layer, x = make_tiny("flat", batch=2)  # layer "4"; conv "3" feeds it
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] = bad
    kind = "1 NaN / 0 Inf" if bad != bad else "0 NaN / 1 Inf"
    with pytest.raises(
        CamwallError,
        match=rf"activations of target layer '4' contain NaN or Inf.*3\.weight has {kind}",
    ):
        compute_cams(model, x, layer, methods)
    assert hook_count(model) == 0


def test_non_finite_weight_after_the_layer_names_the_output(make_tiny):
    model, layer, x = make_tiny("flat", batch=2)
    with torch.no_grad():
        model[6].bias[2] = float("nan")
    with pytest.raises(CamwallError, match=r"output \(logits\) contain NaN.*6\.bias has 1 NaN"):
        compute_cams(model, x, layer, ["gradcam", "eigencam"])


def test_model_lock_is_per_model_and_dropped_with_the_model(make_tiny):
    import gc

    from camwall.modelstate import _LOCKS, model_lock

    model, layer, x = make_tiny("flat")
    other, _, _ = make_tiny("flat")
    assert model_lock(model) is model_lock(model)
    assert model_lock(model) is not model_lock(other)

    compute_cams(other, x, layer, "gradcam")
    key = id(other)
    assert key in _LOCKS
    del other
    gc.collect()
    assert key not in _LOCKS
