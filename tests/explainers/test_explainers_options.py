"""The command-line form NAME.KEY=VALUE and the routing of options to a library."""

from __future__ import annotations

import pytest
import torch

from camwall.errors import CamwallError
from camwall.explainers import explain, parse_explainer_option, parse_explainer_options


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("captum:IntegratedGradients.n_steps=32", ("captum:IntegratedGradients", "n_steps", 32)),
        ("captum:NoiseTunnel.stdevs=0.25", ("captum:NoiseTunnel", "stdevs", 0.25)),
        ("captum:NoiseTunnel.nt_type=smoothgrad", ("captum:NoiseTunnel", "nt_type", "smoothgrad")),
        (
            "captum:Occlusion.sliding_window_shapes=(1, 8, 8)",
            ("captum:Occlusion", "sliding_window_shapes", (1, 8, 8)),
        ),
        ("gradcam:GradCAM.aug_smooth=True", ("gradcam:GradCAM", "aug_smooth", True)),
        ("torchcam:SSCAM.std=None", ("torchcam:SSCAM", "std", None)),
        ("py:my.pkg.mod:fn.seed=-3", ("py:my.pkg.mod:fn", "seed", -3)),
        ("opticam.opticam_lr=1e-2", ("opticam", "opticam_lr", 0.01)),
        ("gradcam:SESS.pool= max ", ("gradcam:SESS", "pool", "max")),
        ("x.path=a=b", ("x", "path", "a=b")),
        ("x.v=[1, 2]", ("x", "v", [1, 2])),
        ("x.v=__import__('os')", ("x", "v", "__import__('os')")),
    ],
)
def test_parse(text, expected):
    assert parse_explainer_option(text) == expected


@pytest.mark.parametrize("text", ["n_steps=3", "captum:Saliency.abs", ".k=1", "a.=1", "a.1x=2"])
def test_parse_rejects_malformed(text):
    with pytest.raises(CamwallError, match=r"NAME\.KEY=VALUE"):
        parse_explainer_option(text)


def test_parse_many_groups_by_name_and_later_wins():
    got = parse_explainer_options(
        ["captum:Lime.n_samples=10", "gradcam:SESS.num_scales=2", "captum:Lime.n_samples=20"]
    )
    assert got == {"captum:Lime": {"n_samples": 20}, "gradcam:SESS": {"num_scales": 2}}


def test_options_reach_the_library(tiny):
    """n_steps changes IntegratedGradients' Riemann sum; a parsed option gives the same map."""
    model, x, _ = tiny
    name, key, value = parse_explainer_option("captum:IntegratedGradients.n_steps=2")
    parsed = explain(model, x, name, [0, 1, 2], **{key: value})
    direct = explain(model, x, name, [0, 1, 2], n_steps=2)
    default = explain(model, x, name, [0, 1, 2])
    assert torch.equal(parsed, direct)
    assert float((parsed - default).abs().max()) > 1e-3


def test_unknown_option_names_the_valid_ones(tiny):
    model, x, _ = tiny
    with pytest.raises(CamwallError, match=r"no option 'nsteps'.*Did you mean 'n_steps'"):
        explain(model, x, "captum:IntegratedGradients", nsteps=3)
    with pytest.raises(CamwallError, match="aug_smooth"):
        explain(model, x, "gradcam:GradCAM", smooth=True)


def test_bad_option_value_is_one_line(tiny):
    model, x, _ = tiny
    with pytest.raises(CamwallError) as err:
        explain(model, x, "gradcam:SESS", pool="median")
    assert "gradcam:SESS" in str(err.value)
    assert "\n" not in str(err.value)
