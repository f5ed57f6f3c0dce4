"""smoothgradcampp, sscam, iscam: torchcam 0.5's raw maps, explicit seeds, batch independence.

Identical noise: torchcam draws its noise with ``torch.distributions.Normal(0, std).sample(shape)``
(one B x ... tensor per sample, from torch's global RNG). The tests wrap ``Normal.sample`` to
record every tensor torchcam draws, stack them (n x B x ...) and pass the stack to camwall's
``*_noise`` option, which replaces camwall's own per-image draws. Both libraries then add the
same noise, and their RAW maps (torchcam ``normalized=False``, i.e. ReLU of the weighted sum;
camwall ``relu(raw_map)``) must agree to 1e-5 relative to the map's scale. iscam draws no noise.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from camwall.cams import METHODS, CamEngine, compute_cams
from camwall.errors import CamwallError


class GapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, stride=2)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))  # smooth: nonzero 2nd derivatives
        return self.fc(a.mean(dim=(2, 3)) + 0.5 * a.pow(2).mean(dim=(2, 3)))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return GapNet().eval()


def _camwall_raw(model, layer, x, name, **opts):
    with CamEngine(model, layer, channels_last=False) as engine:
        ctx = engine.runner.capture(x, None, METHODS.get(name).needs_gradient)
        return METHODS.get(name)(**opts).raw_map(ctx).clamp_min(0)


def _torchcam_raw(cls, model, layer, x, record, **kwargs):
    """torchcam's raw maps and the noise tensors it drew (n x B x ...), or None."""
    drawn: list[torch.Tensor] = []
    original = torch.distributions.Normal.sample

    def sample(self, shape=torch.Size()):  # noqa: B008
        out = original(self, shape)
        drawn.append(out.clone())
        return out

    record.setattr(torch.distributions.Normal, "sample", sample)
    h, w = x.shape[-2:]
    with cls(model, layer, input_shape=(x.shape[1], h, w), **kwargs) as extractor:
        out = model(x)
        maps = extractor(class_idx=out.argmax(dim=1).tolist(), normalized=False)[0]
    record.undo()
    return maps, (torch.stack(drawn) if drawn else None)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1.0)


CASES = [("gap", 2, 9, 11), ("resnet18", 2, 32, 40)]


def _setup(arch, batch, h, w):
    if arch == "gap":
        model, layer = _model(), "conv2"
    else:
        torch.manual_seed(0)
        model, layer = torchvision.models.resnet18(weights=None).eval(), "layer4"
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(4))
    return model, layer, x


@pytest.mark.parametrize(("arch", "batch", "h", "w"), CASES)
def test_smoothgradcampp_raw_matches_torchcam_given_its_noise(arch, batch, h, w, monkeypatch):
    from torchcam.methods import SmoothGradCAMpp

    model, layer, x = _setup(arch, batch, h, w)
    torch.manual_seed(11)
    ref, noise = _torchcam_raw(SmoothGradCAMpp, model, layer, x, monkeypatch, num_samples=3)
    assert noise is not None
    assert noise.shape == (3, batch, 3, h, w)
    ours = _camwall_raw(
        model,
        layer,
        x,
        "smoothgradcampp",
        smoothgradcampp_samples=3,
        smoothgradcampp_noise=noise,
        smoothgradcampp_chunk=4,
    )
    assert float(ref.abs().max()) > 0
    assert _rel(ours, ref) <= 1e-5


@pytest.mark.parametrize(("arch", "batch", "h", "w"), [("gap", 2, 9, 11), ("resnet18", 1, 32, 32)])
def test_sscam_raw_matches_torchcam_given_its_noise(arch, batch, h, w, monkeypatch):
    from torchcam.methods import SSCAM

    model, layer, x = _setup(arch, batch, h, w)
    torch.manual_seed(12)
    ref, noise = _torchcam_raw(SSCAM, model, layer, x, monkeypatch, num_samples=2, batch_size=64)
    k = 6 if arch == "gap" else 512
    assert noise is not None
    assert noise.shape == (2, batch, k, h, w)
    ours = _camwall_raw(
        model, layer, x, "sscam", sscam_samples=2, sscam_noise=noise, sscam_chunk=48
    )
    assert _rel(ours, ref) <= 1e-5


@pytest.mark.parametrize(("arch", "batch", "h", "w"), [("gap", 2, 9, 11), ("resnet18", 1, 32, 32)])
def test_iscam_raw_matches_torchcam(arch, batch, h, w, monkeypatch):
    from torchcam.methods import ISCAM

    model, layer, x = _setup(arch, batch, h, w)
    ref, noise = _torchcam_raw(ISCAM, model, layer, x, monkeypatch, num_samples=3, batch_size=64)
    assert noise is None
    ours = _camwall_raw(model, layer, x, "iscam", iscam_samples=3, iscam_chunk=40)
    assert _rel(ours, ref) <= 1e-5


def test_iscam_constant_channels_scored_once_match_torchcam(monkeypatch):
    """Dead (constant) channels give the zero input: camwall scores it once, same weights."""
    from torchcam.methods import ISCAM

    model = _model(3)
    with torch.no_grad():
        model.conv2.weight[:3] = 0  # channels 0-2 constant: tanh(bias)
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    ref, _ = _torchcam_raw(ISCAM, model, "conv2", x, monkeypatch, num_samples=4)
    ours = _camwall_raw(model, "conv2", x, "iscam", iscam_samples=4, iscam_chunk=5)
    assert _rel(ours, ref) <= 1e-5


@pytest.mark.parametrize("name", ["smoothgradcampp", "sscam"])
def test_noise_is_per_image_independent_of_batch_and_chunk(name):
    model = _model(1)
    x = torch.randn(4, 3, 9, 11, generator=torch.Generator().manual_seed(5))
    samples = {f"{name}_samples": 3}
    full = compute_cams(model, x, "conv2", name, seed=7, **samples, **{f"{name}_chunk": 64})[name]
    tiny = compute_cams(model, x, "conv2", name, seed=7, **samples, **{f"{name}_chunk": 1})[name]
    head = compute_cams(model, x[:2], "conv2", name, seed=7, **samples)[name]
    # same noise per image; batched convolutions round differently (~1e-7), hence not equal()
    assert float((full - tiny).abs().max()) <= 1e-5
    assert float((full[:2] - head).abs().max()) <= 1e-5
    other = compute_cams(model, x, "conv2", name, seed=8, **samples)[name]
    assert float((other - full).abs().max()) > 1e-3  # the seed matters
    g = torch.Generator().manual_seed(3)
    by_gen = compute_cams(model, x, "conv2", name, generator=g, **samples)[name]
    g = torch.Generator().manual_seed(3)
    assert torch.equal(by_gen, compute_cams(model, x, "conv2", name, generator=g, **samples)[name])


def test_image_noise_depends_only_on_seed_and_index():
    from camwall.cams._noise import image_generators

    four = [torch.randn(5, generator=g) for g in image_generators(4, 7, None)]
    two = [torch.randn(5, generator=g) for g in image_generators(2, 7, None)]
    assert all(torch.equal(a, b) for a, b in zip(four, two, strict=False))
    assert not torch.equal(four[0], four[1])
    assert not torch.equal(four[0], torch.randn(5, generator=image_generators(1, 8, None)[0]))


def test_noise_options_are_checked():
    model = _model()
    x = torch.randn(2, 3, 9, 11)
    with pytest.raises(CamwallError, match=r"smoothgradcampp_noise must be a tensor of shape"):
        compute_cams(model, x, "conv2", "smoothgradcampp", smoothgradcampp_noise=torch.zeros(3))
    with pytest.raises(CamwallError, match="option seed must be an integer"):
        compute_cams(model, x, "conv2", "sscam", seed="a")
    with pytest.raises(CamwallError, match="option iscam_samples must be a positive integer"):
        compute_cams(model, x, "conv2", "iscam", iscam_samples=0)


def test_zero_noise_sscam_is_torchcam_scorecam_of_its_upsampled_masks():
    """std 0: every sample is the clean mask, so the weights are softmax of the score gains."""
    model = _model(2)
    x = torch.randn(1, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    with CamEngine(model, "conv2", channels_last=False) as engine:
        ctx = engine.runner.capture(x, None, False)
        w = METHODS.get("sscam")(sscam_samples=2, sscam_std=0.0).weights(ctx)
        from camwall.cams._noise import normalized_masks

        masks = normalized_masks(ctx.activations, (9, 11))[0]
        c = int(ctx.logits.argmax())
        gains = model(masks[:, None] * x)[:, c] - model(x)[0, c]
    assert torch.allclose(w[0], torch.softmax(gains, 0), atol=1e-6)
