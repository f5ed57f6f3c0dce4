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

    def numpy_map(model, x, targets):
        import numpy as np
        return np.ones((x.shape[0], x.shape[2], x.shape[3]), dtype=np.float32)

    def exits(model, x, targets):
        import sys
        sys.exit(0)
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
        ("numpy_map", "returned a ndarray, not a tensor"),  # the docs: any non-tensor
        ("exits", r"called sys\.exit\(0\); it must return a tensor"),
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
        ("py:../../etc:passwd", "module '../../etc' is not a dotted name of Python identifiers"),
        ("py:.{m}:grad", "is not a dotted name of Python identifiers"),
        ("py:{m}.:grad", "is not a dotted name of Python identifiers"),
        ("py:/tmp/{m}:grad", "is not a dotted name of Python identifiers"),
        ("py:{m}:grad.__call__()", r"function 'grad\.__call__\(\)' is not a dotted name"),
    ],
)
def test_import_errors_are_one_line(name, match, user_module):
    with pytest.raises(CamwallError, match=match) as err:
        get_explainer(name.format(m=user_module))
    assert "\n" not in str(err.value)


def test_strings_are_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CamwallError, match="is not a dotted name of Python identifiers"):
        get_explainer("py:__import__('os').system('touch pwned'):x")
    assert not (tmp_path / "pwned").exists()


def test_sys_exit_in_a_user_function_fails_the_bench(user_module, tmp_path, capsys):
    """Not exit 0 with no rows: one line naming the explainer, exit 2, no rows stored."""
    from camwall.bench import Store
    from camwall.cli import main

    out = tmp_path / "out"
    argv = ["bench", "--out", str(out), "--images", "1", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--methods", f"py:{user_module}:exits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"explainer 'py:{user_module}:exits' called sys.exit(0)" in err
    store = out / "results.sqlite"
    if store.exists():
        with Store(store, readonly=True) as s:
            assert list(s.results()) == []
