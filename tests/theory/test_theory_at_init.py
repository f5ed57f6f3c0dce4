"""The at-initialization experiment on Fashion-MNIST test items."""

import pytest
import torch
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from camwall.cams import compute_cams, finalize_maps
from camwall.data import load_fashion_mnist
from camwall.errors import CamwallError
from camwall.theory import at_init_experiment, gradcam_closed_form, pad_to_29


@pytest.fixture(scope="module")
def result():
    return at_init_experiment(indices=(0, 1, 3), seed=0)


def test_padding_one_row_on_top_one_column_on_the_right():
    items = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 28, 28) % 255
    x = pad_to_29(items.to(torch.uint8))
    assert x.shape == (2, 1, 29, 29)
    assert torch.all(x[:, 0, 0, :] == 0)
    assert torch.all(x[:, 0, :, 28] == 0)
    torch.testing.assert_close(x[:, 0, 1:, :28], items / 255.0)
    with pytest.raises(CamwallError, match="N x 28 x 28"):
        pad_to_29(torch.zeros(2, 29, 29))


def test_dead_rows_are_the_items_bottom_14_rows(result):
    # Pooled row 7 (first walled) reads activation rows 14, 15, i.e. padded input rows 14..16;
    # the last live pooled row 6 reads activation rows 12, 13, i.e. padded rows 12..14.
    assert result.wall_row == 14
    assert result.dead_rows == tuple(range(15, 29))  # item rows 14..27
    assert result.outputs_identical
    assert result.last_live_row_matters


def test_any_change_in_the_dead_rows_leaves_outputs_bit_identical(result):
    model, x = result.model, result.images
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 100
    changed = x.clone()
    changed[:, :, 15:, :] = noise[:, :, 15:, :]
    with torch.no_grad():
        assert torch.equal(model(changed), model(x))
        changed[:, :, 14, :] += 1.0  # the last live row
        assert not torch.equal(model(changed), model(x))


def test_gradcam_is_positive_below_the_wall(result):
    items, _ = load_fashion_mnist("test")
    assert torch.equal(result.images, pad_to_29(items[[0, 1, 3]]))
    assert result.cams.shape == (3, 28, 28)
    # items 0 (ankle boot) and 3 (trouser) at seed 0: clearly positive below the wall, even
    # on activation rows whose whole receptive field is in the dead zone (rows >= 15)
    for j in (0, 2):
        assert result.max_below_wall[j] > 0.01
        assert result.max_below_dead[j] > 0.01
        assert result.mass_below_wall[j] > 0.3
        below = result.cams[j, 14:]
        assert torch.equal(result.max_below_wall[j], below.max())


def test_gradcam_matches_closed_form_and_grad_cam_capture(result):
    model, x = result.model, result.images
    cf = gradcam_closed_form(model, x)
    assert torch.equal(cf.target, result.targets)
    torch.testing.assert_close(cf.cam, result.cams, rtol=1e-4, atol=1e-6)
    # pytorch-grad-cam's own activation/gradient capture at the ReLU, GAP weights, no resize
    capture = ActivationsAndGradients(model, [model.relu], None)
    try:
        out = capture(x)
        loss = sum(
            ClassifierOutputTarget(int(t))(o) for t, o in zip(result.targets, out, strict=True)
        )
        loss.backward()
        acts, grads = capture.activations[0], capture.gradients[0]
    finally:
        capture.release()
    weights = grads.mean(dim=(2, 3))
    peer = torch.relu((weights[:, :, None, None] * acts).sum(dim=1))
    torch.testing.assert_close(peer, result.cams, rtol=1e-5, atol=1e-7)


def test_gradcam_matches_the_librarys_gradcam(result):
    # camwall.cams at the same layer (argmax targets, as in the experiment): its map is the
    # experiment's raw map after the library's post-processing (ReLU, min-max normalization,
    # bilinear resize to 29x29, normalization again).
    model, x = result.model, result.images
    maps = compute_cams(model, x, "relu", ["gradcam"])["gradcam"]
    assert maps.shape == (3, 29, 29)
    torch.testing.assert_close(maps, finalize_maps(result.cams, (29, 29)), rtol=0, atol=2e-5)
    # and it is positive on the dead input rows 15..28 too
    assert bool((maps[[0, 2], 15:].amax(dim=(1, 2)) > 0.01).all())


def test_bad_indices():
    with pytest.raises(CamwallError, match=r"within 0\.\.9999"):
        at_init_experiment(indices=(10_000,))
