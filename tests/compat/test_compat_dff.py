"""Deep Feature Factorization and its drawing helpers against pytorch-grad-cam 1.5.7.

Both libraries factorize with the same scikit-learn NMF (``init="random"``, ``random_state=0``),
so the comparisons are of what each feeds it and makes of it: concepts, explanation maps, the
concepts' classifier outputs, and the drawn pictures (same OpenCV and matplotlib).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from compat_models import randomize_bn
from PIL import Image
from pytorch_grad_cam.feature_factorization import deep_feature_factorization as gc_ff
from pytorch_grad_cam.utils import image as gc_image
from torch import nn

from camwall.compat.pytorch_grad_cam import DeepFeatureFactorization, run_dff_on_image
from camwall.compat.pytorch_grad_cam.feature_factorization import dff
from camwall.compat.pytorch_grad_cam.utils import image as cw_image
from camwall.errors import CamwallError

#: NMF stops at scikit-learn's 200 iterations on random activations (in grad-cam too).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet18(weights=None, num_classes=7), 2)


@pytest.fixture
def old_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """grad-cam's default colours call ``plt.cm.get_cmap``, removed in matplotlib 3.9."""
    monkeypatch.setattr(
        matplotlib.cm, "get_cmap", lambda name: matplotlib.colormaps[name], raising=False
    )


def test_dff_equals_gradcam() -> None:
    g = np.random.default_rng(0)
    acts = g.normal(size=(2, 8, 5, 6)).astype(np.float32)
    acts[0, 3, 1, 2] = np.nan
    concepts, maps = dff(acts.copy(), n_components=3)
    ref_concepts, ref_maps = gc_ff.dff(acts.copy(), n_components=3)
    assert concepts.shape == (8, 3)
    assert maps.shape == (2, 3, 5, 6)
    assert np.abs(ref_maps).max() > 0.1
    np.testing.assert_allclose(concepts, ref_concepts, rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps, ref_maps, rtol=0, atol=1e-6)


def test_deep_feature_factorization_equals_gradcam(resnet) -> None:
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    ours = DeepFeatureFactorization(resnet, resnet.layer4, computation_on_concepts=resnet.fc)
    theirs = gc_ff.DeepFeatureFactorization(
        resnet, resnet.layer4, computation_on_concepts=resnet.fc
    )
    concepts, maps, outputs = ours(x, n_components=4)
    ref_concepts, ref_maps, ref_outputs = theirs(x, n_components=4)
    theirs.activations_and_grads.release()
    assert len(maps) == 2
    assert maps[0].shape == (4, 64, 48)
    assert outputs.shape == (4, 7)
    np.testing.assert_allclose(concepts, ref_concepts, rtol=1e-5, atol=1e-5)
    for a, b in zip(maps, ref_maps, strict=True):
        assert b.max() > 0.5
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(outputs, ref_outputs, rtol=1e-5, atol=1e-5)


def test_no_hooks_and_modes_left(resnet) -> None:
    resnet.train()
    try:
        ours = DeepFeatureFactorization(resnet, resnet.layer4)
        with ours:
            concepts, maps = ours(torch.rand(1, 3, 32, 32), n_components=2)
            assert maps[0].shape == (2, 32, 32)
        assert all(m.training for m in resnet.modules())
        assert sum(len(m._forward_hooks) for m in resnet.modules()) == 0
        assert all(p.grad is None for p in resnet.parameters())
    finally:
        resnet.eval()
    assert concepts.shape == (512, 2)


def colours(n: int) -> list[np.ndarray]:
    cmap = matplotlib.colormaps["gist_rainbow"]
    return [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / n)]


@pytest.mark.parametrize("labels", [None, ["cat:0.50", "dog:0.30\nfox:0.10", "car:0.90"]])
def test_show_factorization_on_image_equals_gradcam(labels) -> None:
    g = np.random.default_rng(2)
    img = g.random((40, 56, 3), dtype=np.float32)
    maps = g.random((3, 40, 56), dtype=np.float32)
    before = matplotlib.rcParams["legend.fontsize"]
    ours = cw_image.show_factorization_on_image(img, maps.copy(), colours(3), 0.4, labels)
    assert matplotlib.rcParams["legend.fontsize"] == before  # camwall leaves rcParams alone
    with matplotlib.rc_context():  # grad-cam sets legend.fontsize globally
        theirs = gc_image.show_factorization_on_image(img, maps.copy(), colours(3), 0.4, labels)
    assert ours.shape == ((40, 112, 3) if labels else (40, 56, 3))
    assert np.array_equal(ours, theirs)


@pytest.mark.usefixtures("old_matplotlib")
def test_run_dff_on_image_equals_gradcam(resnet) -> None:
    """A model with a Hugging Face-style ``config.id2label``; grad-cam's default
    ``reshape_transform`` is a typing object, so it is passed (None) to both."""
    resnet.config = SimpleNamespace(id2label={i: f"class {i},x,y,z" for i in range(7)})
    try:
        g = np.random.default_rng(3)
        img = Image.fromarray((g.random((48, 40, 3)) * 255).astype(np.uint8))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
        args = (resnet, resnet.layer4, resnet.fc, img, x)
        ours = run_dff_on_image(*args, reshape_transform=None, n_components=3, top_k=2)
        with matplotlib.rc_context():
            theirs = gc_ff.run_dff_on_image(*args, reshape_transform=None, n_components=3, top_k=2)
    finally:
        del resnet.config
    assert ours.shape == (48, 120, 3)
    assert np.array_equal(ours, theirs)


def test_run_dff_on_image_needs_id2label(resnet) -> None:
    img = Image.new("RGB", (32, 32))
    with pytest.raises(CamwallError, match="id2label"):
        run_dff_on_image(resnet, resnet.layer4, resnet.fc, img, torch.rand(3, 32, 32))


def test_missing_scikit_learn_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)
    with pytest.raises(CamwallError, match="scikit-learn"):
        dff(np.ones((1, 2, 3, 3), dtype=np.float32), n_components=1)
