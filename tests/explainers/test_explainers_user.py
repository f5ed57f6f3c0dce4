"""``py:package.module:function`` explainers: import, output checks, clear errors."""

from __future__ import annotations

import textwrap

import pytest
import torch

from camwall.errors import CamwallError
from camwall.explainers import explain, get_explainer

MODULE = textwrap.dedent(
    '''
    import torch

    def grad(model, x, targets, power=1):
        """|dy/dx| ** power, B x C x H x W: reduced like captum's attributions."""
        x = x.clone().requires_grad_(True)
        y = model(x)[torch.arange(len(targets)), torch.tensor(targets)].sum()
        (g,) = torch.autograd.grad(y, x)
        return g.abs() ** power

    grad.camwall_family = "gradient"

    def rows(model, x, targets):
        """A B x H x W map: the row index."""
        b, _, h, w = x.shape
        return torch.arange(h, dtype=torch.float32)[:, None].expand(b, h, w).clone()

    def wrong_shape(model, x, targets):
        return torch.ones(x.shape[0], 5)

    def nan(model, x, targets):
        return torch.full(x.shape[:1] + x.shape[2:], float("nan"))

    def numpy_list(model, x, targets):
        return [[0.0]]

    def meta(model, x, targets):
        return torch.ones(x.shape[0], x.shape[2], x.shape[3], device="meta")

    def ints(model, x, targets):
        return torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=torch.int64)

    def bad_family(model, x, targets):
        return torch.ones(x.shape[0], x.shape[2], x.shape[3])

    bad_family.camwall_family = "magic"
    NOT_CALLABLE = 3
    '''
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "cw_user_explainers.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "cw_user_explainers"


def test_user_gradient_matches_captum_saliency(user_module, tiny):
    model, x, _ = tiny
    ours = explain(model, x, f"py:{user_module}:grad", [1, 2, 3])
    ref = explain(model, x, "captum:Saliency", [1, 2, 3])
    assert torch.allclose(ours, ref, atol=1e-6)
    exp = get_explainer(f"py:{user_module}:grad", power=2)
    assert (exp.family, exp.source) == ("gradient", "user")
    squared = exp(model, x, [1, 2, 3])
    assert not torch.allclose(squared, ours, atol=1e-3)


def test_user_map_is_normalized(user_module, tiny):
    model, x, _ = tiny
    maps = explain(model, x, f"py:{user_module}:rows")
    expected = (torch.arange(16.0) / (15 + 1e-7))[:, None].expand(3, 16, 16)
    assert torch.allclose(maps, expected)
    assert get_explainer(f"py:{user_module}:rows").family == "other"


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        ("wrong_shape", r"returned shape \(3, 5\).*expected \(3, 16, 16\)"),
        ("nan", "NaN or Inf"),
        ("numpy_list", "returned a list, not a tensor"),
        ("meta", "returned a map on meta for an input on cpu"),
        ("ints", "dtype torch.int64"),
    ],
)
def test_bad_outputs_name_the_explainer(fn, match, user_module, tiny):
    model, x, _ = tiny
    name = f"py:{user_module}:{fn}"
    with pytest.raises(CamwallError, match=match) as err:
        explain(model, x, name)
    assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("py:cw_no_such_module_xyz:fn", "cannot import module 'cw_no_such_module_xyz'"),
        ("py:{m}:missing", "has no attribute 'missing'"),
        ("py:{m}:NOT_CALLABLE", "is a int, not callable"),
        ("py:{m}", "is not py:package.module:function"),
        ("py:{m}:bad_family", "camwall_family='magic'"),
    ],
)
def test_import_errors_are_one_line(name, match, user_module):
    with pytest.raises(CamwallError, match=match) as err:
        get_explainer(name.format(m=user_module))
    assert "\n" not in str(err.value)


def test_strings_are_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CamwallError, match="cannot import module"):
        get_explainer("py:__import__('os').system('touch pwned'):x")
    assert not (tmp_path / "pwned").exists()
