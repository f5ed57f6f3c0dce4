"""Bad input gets a CamwallError whose message names the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camwall.cams import METHODS, CamEngine, compute_cams
from camwall.errors import CamwallError

# cam needs a model ending in global average pooling + Linear (tests/cams/test_cams_methods.py)
ANY_MODEL = [
    n for n in METHODS.names() if n not in ("cam", "rollout", "legrad", "sess")
]  # rollout, legrad: ViTs only; sess: square patches


class TupleOut(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.inner(x)
        return out, out.softmax(1)


class DictOut(TupleOut):
    """A dict without a ``"logits"`` / ``"out"`` entry (those are taken as the output)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"scores": self.inner(x)}


class LogitsOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"logits": self.inner(x)}


class HubOut(TupleOut):
    """A Hugging Face-style output object: the logits as an attribute."""

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        return type("ImageClassifierOutput", (), {"logits": self.inner(x), "loss": None})()


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


class FeaturesOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"features": self.inner(x)}  # no "logits" entry: nothing to read


class NestedOut(TupleOut):
    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor]]:  # type: ignore[override]
        return ([self.inner(x)],)  # first item not a tensor


@pytest.mark.parametrize("wrapper", [FeaturesOut, NestedOut])
def test_non_tensor_output_names_the_fix(wrapper, make_tiny):
    inner, layer, x = make_tiny("flat")
    model = wrapper(inner)
    with pytest.raises(CamwallError, match="output_fn") as err:
        compute_cams(model, x, f"inner.{layer}", "gradcam")
    assert "wrap" in str(err.value).lower()
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    ("wrapper", "pick"),
    [(TupleOut, lambda out: out[0]), (DictOut, lambda out: out["scores"])],
)
def test_output_fn_fixes_it(wrapper, pick, make_tiny):
    inner, layer, x = make_tiny("flat")
    names = ANY_MODEL
    expected = compute_cams(inner, x, layer, names, opticam_iters=3)
    got = compute_cams(wrapper(inner), x, f"inner.{layer}", names, output_fn=pick, opticam_iters=3)
    for n in names:
        torch.testing.assert_close(got[n], expected[n], rtol=0, atol=1e-5)


@pytest.mark.parametrize("wrapper", [TupleOut, LogitsOut, HubOut])
def test_logits_first_or_named_need_no_output_fn(wrapper, make_tiny):
    inner, layer, x = make_tiny("flat")
    expected = compute_cams(inner, x, layer, ["gradcam", "scorecam"])
    got = compute_cams(wrapper(inner), x, f"inner.{layer}", ["gradcam", "scorecam"])
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=0, atol=0)


def test_unknown_layer_suggests(make_tiny):
    model, _, x = make_tiny("nested")
    with pytest.raises(CamwallError, match=r"'features\.33'.*Did you mean 'features\.3'"):
        compute_cams(model, x, "features.33", "gradcam")


def test_foreign_layer_module(make_tiny):
    model, _, x = make_tiny("nested")
    with pytest.raises(CamwallError, match="not a submodule"):
        compute_cams(model, x, nn.ReLU(), "gradcam")


def test_unknown_method_suggests(make_tiny):
    model, layer, x = make_tiny("flat")
    with pytest.raises(CamwallError, match=r"'scorecan'\. Did you mean 'scorecam'"):
        compute_cams(model, x, layer, ["gradcam", "scorecan"])
    assert hook_count(model) == 0


def test_unknown_option_suggests(make_tiny):
    model, layer, x = make_tiny("flat")
    with pytest.raises(CamwallError, match="Did you mean 'scorecam_chunk'"):
        compute_cams(model, x, layer, "scorecam", scorecam_chunks=4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_input(bad, make_tiny):
    model, layer, x = make_tiny("flat")
    x[0, 0, 1, 1] = bad
    with pytest.raises(CamwallError, match="NaN or Inf"):
        compute_cams(model, x, layer, "gradcam")


def test_rank_three_input_suggests_unsqueeze(make_tiny):
    model, layer, x = make_tiny("flat")
    with pytest.raises(CamwallError, match=r"B x C x H x W.*unsqueeze\(0\)"):
        compute_cams(model, x[0], layer, "gradcam")


def test_integer_input(make_tiny):
    model, layer, x = make_tiny("flat")
    with pytest.raises(CamwallError, match="floating-point"):
        compute_cams(model, (x * 100).to(torch.uint8), layer, "gradcam")


def test_dtype_mismatch(make_tiny):
    model, layer, x = make_tiny("flat")
    with pytest.raises(CamwallError, match=r"model\.to\(x\.dtype\)"):
        compute_cams(model, x.to(torch.float64), layer, "gradcam")


def test_wrong_number_of_targets(make_tiny):
    model, layer, x = make_tiny("flat", batch=2)
    with pytest.raises(CamwallError, match="got 3 targets for a batch of 2"):
        compute_cams(model, x, layer, "gradcam", targets=[0, 1, 2])


def test_target_class_out_of_range(make_tiny):
    model, layer, x = make_tiny("flat", batch=1)
    with pytest.raises(CamwallError, match="out of range"):
        compute_cams(model, x, layer, "gradcam", targets=[5])


def test_target_callable_must_return_a_scalar(make_tiny):
    model, layer, x = make_tiny("flat", batch=1)
    with pytest.raises(CamwallError, match="scalar"):
        compute_cams(model, x, layer, "gradcam", targets=[lambda row: row[:2]])


def test_layer_that_runs_twice(make_tiny):
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.conv(self.act(x))).mean((2, 3)))

    model = Twice()
    with pytest.raises(CamwallError, match="more than once"):
        compute_cams(model, torch.randn(1, 3, 4, 4), "act", "gradcam")
    assert hook_count(model) == 0


def test_layer_that_never_runs():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.extra = nn.Conv2d(2, 2, 1)  # registered but never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))

    model = Unused()
    with pytest.raises(CamwallError, match="did not run"):
        compute_cams(model, torch.randn(1, 1, 5, 5), "extra", "gradcam")


def test_layer_with_non_spatial_output(make_tiny):
    model, _, x = make_tiny("flat")
    with pytest.raises(CamwallError, match="B x K x h x w"):
        compute_cams(model, x, "6", "gradcam")


def test_bad_chunk_option(make_tiny):
    model, layer, x = make_tiny("flat", batch=1)
    with pytest.raises(CamwallError, match="positive integer"):
        compute_cams(model, x, layer, "scorecam", scorecam_chunk=0)
    assert hook_count(model) == 0


def test_not_a_model():
    with pytest.raises(CamwallError, match=r"nn\.Module"):
        CamEngine(lambda x: x, "0")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "cam", "sess", "opticam", "gradcam"])
def test_empty_batch_is_one_clear_error(name):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with pytest.raises(CamwallError, match=r"empty batch.*at least one image"):
        compute_cams(model, torch.rand(0, 3, 8, 8), "1", name)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "ablationcam", "fullgrad", "eigencam"])
def test_target_callable_returning_nan_is_refused(name, make_tiny):
    model, layer, x = make_tiny("flat", batch=2)
    targets = [lambda row: row[0], lambda row: row[1] * float("nan")]
    with pytest.raises(CamwallError, match=r"target callable of image 1 returned nan"):
        compute_cams(model, x, layer, name, targets=targets)
    assert hook_count(model) == 0


def test_target_callable_returning_nan_only_on_masked_inputs_is_refused(make_tiny):
    """scorecam scores masked copies with the same callable: a NaN there is refused too."""
    model, layer, x = make_tiny("flat", batch=1)
    clean = model(x)[0, 0].item()

    def target(row: torch.Tensor) -> torch.Tensor:
        return row[0] if abs(float(row[0]) - clean) < 1e-6 else row[0] * float("nan")

    with pytest.raises(CamwallError, match=r"target callable of image 0 returned nan"):
        compute_cams(model, x, layer, "scorecam", targets=[target])


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("ablationcam", "ablation_value", float("inf")),
        ("ablationcam", "ablation_value", float("nan")),
        ("fem", "fem_k", float("nan")),
        ("opticam", "opticam_lr", float("nan")),
        ("opticam", "opticam_lr", 0.0),
        ("opticam", "opticam_lr", float("inf")),
        ("randomcam", "seed", 2**70),
        ("sscam", "seed", -(2**64)),
        ("opticam", "seed", 2**64),
        ("sscam", "sscam_std", float("inf")),
        ("kpcacam", "kpcacam_gamma", float("nan")),
        ("finercam", "finercam_alpha", float("nan")),
        ("sess", "sess_theta", float("nan")),
    ],
)
def test_out_of_range_option_values_name_the_option(name, option, value, make_tiny):
    model, layer, x = make_tiny("flat", batch=1)
    with pytest.raises(CamwallError, match=f"option {option} must be"):
        compute_cams(model, x, layer, name, **{option: value})
    assert hook_count(model) == 0


def test_seeds_at_the_ends_of_torchs_range_are_accepted(make_tiny):
    model, layer, x = make_tiny("flat", batch=1)
    for seed in (2**64 - 1, -(2**63), 0):
        maps = compute_cams(model, x, layer, ["randomcam", "sscam"], seed=seed, sscam_samples=1)
        assert all(bool(torch.isfinite(m).all()) for m in maps.values())
