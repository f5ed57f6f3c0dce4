"""Hooks, modes, flags and gradients are left as they were; batched equals per-image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camwall.cams import METHODS, CamEngine, compute_cams

# cam needs a model ending in global average pooling + Linear (tests/cams/test_cams_methods.py)
ANY_MODEL = [
    n for n in METHODS.names() if n not in ("cam", "rollout", "legrad", "sess")
]  # rollout, legrad: ViTs only; sess: square patches


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


class Boom(RuntimeError):
    pass


def exploding_target(row: torch.Tensor) -> torch.Tensor:
    raise Boom("target failed")


@pytest.mark.parametrize("name", ANY_MODEL)
def test_no_hook_survives_an_exception(name, make_tiny):
    model, layer, x = make_tiny("custom", batch=1)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(Boom):
        compute_cams(model, x, layer, name, targets=[exploding_target])
    assert hook_count(model) == 0
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "opticam"])
def test_no_hook_survives_an_exception_in_a_later_pass(name, make_tiny):
    """The target works on the first pass and fails on the method's own passes."""
    model, layer, x = make_tiny("custom", batch=1)
    calls = []

    def flaky(row: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 1:
            raise Boom("later pass failed")
        return row[0]

    with pytest.raises(Boom):
        compute_cams(model, x, layer, name, targets=[flaky], opticam_iters=2)
    assert len(calls) == 2
    assert hook_count(model) == 0


def test_with_block_holds_one_hook_and_removes_it_after_an_exception(make_tiny):
    model, layer, x = make_tiny("flat")
    engine = CamEngine(model, layer)
    try:
        with engine:
            assert hook_count(model) == 1
            engine(x, "gradcam")
            assert hook_count(model) == 1
            engine(x, "gradcam", targets=[exploding_target, exploding_target])
    except Boom:
        pass
    else:
        pytest.fail("the target's exception must propagate")
    assert hook_count(model) == 0
    engine.__exit__(None, None, None)  # removing twice is harmless
    assert hook_count(model) == 0


def test_modes_flags_and_grads_restored(make_tiny):
    model, layer, x = make_tiny("nested")
    model.train()
    model.features[0].eval()  # a mixed state must come back exactly
    first_conv = model.features[0]
    first_conv.weight.requires_grad_(False)
    before_modes = [m.training for m in model.modules()]
    before_flags = [p.requires_grad for p in model.parameters()]
    compute_cams(model, x, layer, ANY_MODEL, opticam_iters=3)
    assert [m.training for m in model.modules()] == before_modes
    assert [p.requires_grad for p in model.parameters()] == before_flags
    assert all(p.grad is None for p in model.parameters())
    assert hook_count(model) == 0


def test_existing_grads_are_untouched(make_tiny):
    model, layer, x = make_tiny("flat")
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    compute_cams(model, x, layer, ["gradcam", "layercam"])
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)


def test_input_requiring_grad_is_not_modified(make_tiny):
    model, layer, x = make_tiny("flat")
    x.requires_grad_(True)
    compute_cams(model, x, layer, "gradcam")
    assert x.grad is None


def test_eval_mode_is_used_inside(make_tiny):
    """Dropout in train mode would make the maps random; the engine computes in eval mode."""
    model, _, x = make_tiny("flat", h=8, w=8)
    model = nn.Sequential(*model[:5], nn.Dropout2d(0.5), *model[5:]).train()
    maps = [compute_cams(model, x, "4", "gradcam")["gradcam"] for _ in range(2)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=0)
    assert model.training


@pytest.mark.parametrize("name", ANY_MODEL)
@pytest.mark.parametrize("model_name", ["flat", "custom"])
def test_batched_equals_per_image(name, model_name, make_tiny):
    if name == "randomcam":
        pytest.skip("randomcam draws B x K weights per call: the batch changes the draws")
    if name in ("smoothgradcampp", "sscam"):
        pytest.skip("noise is drawn per image index (test_cams_noise.py checks batch independence)")
    model, layer, x = make_tiny(model_name, seed=3, batch=3, h=8, w=10)
    opts = {"opticam_iters": 10, "scorecam_chunk": 5, "ablationcam_chunk": 7}
    batched = compute_cams(model, x, layer, name, **opts)[name]
    single = torch.cat(
        [compute_cams(model, x[i : i + 1], layer, name, **opts)[name] for i in range(3)]
    )
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "option"), [("scorecam", "scorecam_chunk"), ("ablationcam", "ablationcam_chunk")]
)
def test_chunk_size_does_not_change_the_result(name, option, make_tiny):
    model, layer, x = make_tiny("nested", seed=5, batch=2)
    a = compute_cams(model, x, layer, name, **{option: 1})[name]
    b = compute_cams(model, x, layer, name, **{option: 1000})[name]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_scorecam_dedupe_matches_a_plain_loop(make_tiny):
    """Dead channels (all-zero) and duplicated channels are scored once; result unchanged."""
    model, layer, x = make_tiny("flat", seed=8, batch=2)
    conv = model[3]
    with torch.no_grad():
        conv.weight[1] = conv.weight[0]  # channel 1 duplicates channel 0
        conv.bias[1] = conv.bias[0]
        conv.weight[2].zero_()  # channel 2 is dead after the ReLU
        conv.bias[2] = -1.0
    got = compute_cams(model, x, layer, "scorecam")["scorecam"]
    # plain Score-CAM, every channel scored separately
    with torch.no_grad():
        acts = model[:5](x)
        up = nn.functional.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)
        lo = up.amin(dim=(2, 3), keepdim=True)
        hi = up.amax(dim=(2, 3), keepdim=True)
        masks = (up - lo) / (hi - lo + 1e-8)
        cls = model(x).argmax(1)
        scores = torch.stack(
            [model(x[b] * masks[b][:, None])[:, cls[b]] for b in range(x.shape[0])]
        )
        cam = (torch.softmax(scores, 1)[:, :, None, None] * acts).sum(1)
    from camwall.cams import finalize_maps

    torch.testing.assert_close(got, finalize_maps(cam, tuple(x.shape[-2:])), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_work(dtype, make_tiny):
    model, layer, x = make_tiny("flat", seed=2)
    names = [n for n in ANY_MODEL if n != "opticam"]
    full = compute_cams(model, x, layer, names)
    low = compute_cams(model.to(dtype), x.to(dtype), layer, names)
    for n in names:
        assert low[n].dtype == torch.float32
        assert low[n].device == x.device
        if n == "fem":  # a count of positions above a threshold: rounding flips some, by design
            continue
        assert float((low[n] - full[n]).abs().max()) < 0.05


def test_outputs_live_on_the_input_device(make_tiny):
    model, layer, x = make_tiny("flat")
    for n, m in compute_cams(model, x, layer, ANY_MODEL, opticam_iters=2).items():
        assert m.device == x.device, n
        assert float(m.min()) >= 0.0
        assert float(m.max()) <= 1.0


class ViewNet(nn.Module):
    """Calls .view on a feature map, which a channels-last tensor does not allow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

        self.channels_last_inputs = 0  # forwards that got a channels-last input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            self.channels_last_inputs += 1
        a = self.act(self.conv(x))
        return self.fc(a.view(a.shape[0], -1))


def test_model_that_rejects_channels_last_falls_back_for_that_call_only():
    """The first forward of a call fails on channels-last; the rest of the call runs plain,
    and the next call tries channels-last again (the setting itself is kept)."""
    torch.manual_seed(0)
    model = ViewNet()
    x = torch.randn(2, 3, 6, 6)
    names = [n for n in ANY_MODEL if n != "opticam"]
    with CamEngine(model, "act", channels_last=True) as engine:
        got = engine(x, names)
        assert model.channels_last_inputs == 1
        assert engine.channels_last is True
        again = engine(x, names)
        assert model.channels_last_inputs == 2
    plain = compute_cams(model, x, "act", names, channels_last=False)
    for n in names:
        torch.testing.assert_close(got[n], plain[n], rtol=0, atol=1e-6)
        torch.testing.assert_close(again[n], plain[n], rtol=0, atol=0)


@pytest.mark.parametrize("name", ANY_MODEL)
def test_channels_last_gives_the_same_maps(name, make_tiny):
    model, layer, x = make_tiny("nested", seed=13, batch=2)
    opts = {"opticam_iters": 5}
    fast = compute_cams(model, x, layer, name, channels_last=True, **opts)[name]
    plain = compute_cams(model, x, layer, name, channels_last=False, **opts)[name]
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("isa", "wide"),
    [(None, None), ("AVX2", False), ("avx512_core", None), ("AVX10_1_512_AMX", None)],
)
def test_layout_rule_reads_the_cpu_and_the_onednn_cap(isa, wide, monkeypatch):
    """Channels-last for batches of 2+ on CPU; for one image only on AVX-512 kernels, which
    ``ONEDNN_MAX_CPU_ISA`` can cap (as ``make test-avx2`` does). ``None``: the CPU's own."""
    from camwall.cams import _pass

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    _pass._wide_vectors.cache_clear()
    try:
        avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        expected = avx512 if wide is None else wide
        assert _pass.channels_last_default(torch.empty(1, 3, 8, 8)) is expected
        assert _pass.channels_last_default(torch.empty(2, 3, 8, 8)) is True
        assert _pass.channels_last_default(torch.empty(2, 3, 8, 8, device="meta")) is False
    finally:
        _pass._wide_vectors.cache_clear()


@pytest.mark.parametrize(
    ("model_name", "stem"),
    [("flat", "0"), ("nested", "features.0"), ("custom", "conv1"), ("skip", "conv1")],
)
def test_ablationcam_reruns_only_the_tail(model_name, stem, make_tiny):
    """Sequential models (also nested) and models whose graph torch.fx can cut after the target
    layer re-run only the layers after it."""
    model, layer, x = make_tiny(model_name, batch=2)
    calls = []
    handle = model.get_submodule(stem).register_forward_hook(lambda *args: calls.append(1))
    try:
        compute_cams(model, x, layer, "ablationcam", ablationcam_chunk=4)
    finally:
        handle.remove()
    if model_name == "skip":  # the residual around the layer is captured: the stem runs once more
        assert len(calls) == 2
    else:
        assert len(calls) == 1  # the shared forward pass only


def test_gradient_methods_share_one_forward_pass(make_tiny):
    model, layer, x = make_tiny("nested", batch=2)
    calls = []
    handle = model.get_submodule("features.0").register_forward_hook(lambda *a: calls.append(1))
    try:
        compute_cams(
            model, x, layer, [n for n, c in METHODS.items() if c.needs_gradient] + ["eigencam"]
        )
    finally:
        handle.remove()
    assert len(calls) == 1


def test_thread_count_restored(make_tiny):
    """eigencam runs its SVD on one CPU thread and restores the caller's setting."""
    model, layer, x = make_tiny("flat")
    torch.set_num_threads(2)
    compute_cams(model, x, layer, ["eigencam", "gradcam"])
    assert torch.get_num_threads() == 2
