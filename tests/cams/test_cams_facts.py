"""What a method is lives on its class; each method sees only its own options; the engine's
modules form no import circle; one helper saves and restores a model's state."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

import camwall.cams
from camwall.cams import METHODS, CamContext, CamEngine, CamMethod, chunk_options, compute_cams
from camwall.errors import CamwallError
from camwall.modelstate import held, hook_count, model_lock

CAMS_DIR = Path(camwall.cams.__file__).parent


def test_stochastic_methods_are_those_that_take_a_seed():
    stochastic = {n for n, c in METHODS.items() if c.stochastic}
    assert stochastic == {"opticam", "randomcam", "smoothgradcampp", "sscam"}
    for _, cls in METHODS.items():
        assert cls.stochastic == (cls.seed_option in cls.options)


def test_the_explainer_registry_reads_stochastic_from_the_classes():
    from camwall.explainers import EXPLAINERS

    for name, cls in METHODS.items():
        assert EXPLAINERS.get(name).stochastic is cls.stochastic, name


def test_every_method_that_chunks_declares_its_chunk_option():
    chunked = {n for n, c in METHODS.items() if any(o.endswith("_chunk") for o in c.options)}
    assert chunked == {n for n, c in METHODS.items() if c.chunk_option is not None}
    assert chunked == {"scorecam", "ablationcam", "smoothgradcampp", "sscam", "iscam", "sess"}
    for name in chunked:
        cls = METHODS.get(name)
        assert cls.chunk_option == f"{name}_chunk"
        assert cls.chunk_budget > 0


def test_chunk_options_come_from_the_classes():
    small = torch.zeros(2, 1, 64, 64)
    large = torch.zeros(2, 3, 224, 224)
    # the bench's settings for scorecam and ablationcam, unchanged
    assert chunk_options(small, ["scorecam", "ablationcam"]) == {
        "scorecam_chunk": 256,
        "ablationcam_chunk": 512,
    }
    assert chunk_options(large, ["scorecam", "ablationcam"]) == {
        "scorecam_chunk": 16,
        "ablationcam_chunk": 32,
    }
    assert chunk_options(small, ["gradcam", "opticam", "captum:Saliency", "uniform"]) == {}
    # now also the methods the bench's name-guessing missed
    got = chunk_options(small, ["sscam", "iscam", "sess", "smoothgradcampp"])
    assert got == {
        "sscam_chunk": 2**20 // 4096,
        "iscam_chunk": 2**20 // 4096,
        "sess_chunk": 2**19 // 4096,
        "smoothgradcampp_chunk": 2**19 // 4096,
    }
    for option, rows in chunk_options(large, list(METHODS.names())).items():
        assert rows == METHODS.get(option.removesuffix("_chunk")).options[option]  # defaults


@pytest.mark.parametrize("name", ["sscam", "iscam", "smoothgradcampp"])
def test_the_new_chunk_sizes_do_not_change_the_maps(name, make_tiny):
    model, layer, x = make_tiny("flat", seed=2, batch=2, h=8, w=8)
    small = {f"{name}_samples": 2}
    one = compute_cams(model, x, layer, name, **small, **{f"{name}_chunk": 1})[name]
    big = compute_cams(model, x, layer, name, **small, **chunk_options(x, [name]))[name]
    torch.testing.assert_close(one, big, rtol=0, atol=1e-6)


def test_several_layers_3d_and_eigen_smooth_are_class_facts():
    for name, cls in METHODS.items():
        whole = cls.final_map is not CamMethod.final_map
        assert cls.whole_map == whole, name
        own_eigen = cls.eigen_map is not CamMethod.eigen_map
        assert cls.eigen_smooth == (not whole or own_eigen), name
        assert cls.several_layers == (not whole), name
    assert METHODS.get("ablationcam").several_layers  # one tail per layer
    assert not METHODS.get("opticam").several_layers  # it makes its map itself
    assert METHODS.get("sess").spans_layers  # each patch over every layer
    assert METHODS.get("fullgrad").eigen_smooth  # its own decomposition (eigen_map)
    assert METHODS.get("refinecam").spans_layers
    assert METHODS.get("gradcam").volumetric
    assert not METHODS.get("scorecam").volumetric


def test_each_method_receives_only_its_own_options(make_tiny, monkeypatch):
    seen: dict[str, set[str]] = {}
    for _, cls in METHODS.items():
        original = cls.__init__

        def spy(self, __original=original, **options):
            seen[type(self).name] = set(options)
            __original(self, **options)

        monkeypatch.setattr(cls, "__init__", spy)
    model, layer, x = make_tiny("flat", batch=1, h=8, w=8)
    options = {"scorecam_chunk": 3, "ablation_value": 0.5, "fem_k": 1.0, "seed": 4}
    compute_cams(
        model, x, layer, ["gradcam", "scorecam", "ablationcam", "fem", "randomcam"], **options
    )
    assert seen == {
        "gradcam": set(),
        "scorecam": {"scorecam_chunk"},
        "ablationcam": {"ablation_value"},
        "fem": {"fem_k"},
        "randomcam": {"seed"},
    }


def test_a_method_refuses_an_option_of_another():
    with pytest.raises(CamwallError, match="gradcam takes no option 'scorecam_chunk'"):
        METHODS.get("gradcam")(scorecam_chunk=3)


class CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("method", "option", "value"),
    [
        ("scorecam", "scorecam_chunk", 0),
        ("ablationcam", "ablation_value", "zero"),
        ("fem", "fem_k", None),
        ("opticam", "opticam_iters", 0),
        ("opticam", "opticam_init", "ones"),
        ("kpcacam", "kpcacam_kernel", "linear"),
        ("sscam", "sscam_std", -1.0),
        ("iscam", "iscam_samples", 0),
        ("sess", "sess_pool", "sum"),
        ("sess", "sess_base", "sess"),
        ("randomcam", "seed", 1.5),
    ],
)
def test_option_values_are_checked_before_any_pass(method, option, value):
    model = CountingNet()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(CamwallError, match=f"option {option} must"):
        compute_cams(model, x, "act", method, **{option: value})
    assert model.forwards == 0


def test_cams_modules_form_no_import_circle():
    """Every import between camwall.cams modules, at the top, in a function or under
    TYPE_CHECKING, goes one way."""
    graph: dict[str, set[str]] = {}
    for path in CAMS_DIR.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("camwall.cams."):
                deps.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = deps
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import circle: {' -> '.join((*path, mod))}"
        if mod in done:
            return
        for dep in graph.get(mod, ()):
            visit(dep, (*path, mod))
        done.add(mod)

    for mod in graph:
        if mod != "__init__":
            visit(mod, ())


def test_methods_see_a_runner_not_the_engine(make_tiny):
    assert "engine" not in CamContext.__dataclass_fields__
    for path in CAMS_DIR.glob("*.py"):
        text = path.read_text()
        assert "ctx.engine" not in text, path.name
        assert "_capture_pass" not in text, path.name
    model, layer, x = make_tiny("flat", batch=2)
    with CamEngine(model, layer) as engine:
        ctx = engine.runner.capture(x, None, True)
        assert ctx.runner is engine.runner
        assert ctx.gradients is not None
        assert ctx.gradients.shape == ctx.activations.shape
        torch.testing.assert_close(ctx.runner.run_model(x), model(x), rtol=0, atol=1e-5)
        assert ctx.runner.layer_name == layer


def _dirty() -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Dropout(0.5)).train()
    model[2].eval()
    model[0].bias.requires_grad_(False)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    return model


def test_held_restores_modes_flags_grads_hooks_and_children_even_after_an_error():
    model = _dirty()
    grad = model[0].weight.grad
    relu = model[1]
    inside: list[bool] = []

    def change_everything() -> None:
        with held(model, grads=True, structure=True):
            inside.append(model.training or any(p.requires_grad for p in model.parameters()))
            model[0].weight.grad = None
            model[1] = nn.Tanh()
            model[0].register_forward_hook(lambda m, i, o: None)
            model[0].weight.requires_grad_(True)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        change_everything()
    assert inside == [False]  # eval mode, every parameter frozen
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert [p.requires_grad for p in model.parameters()] == [True, False]
    assert model[0].weight.grad is grad
    assert model[1] is relu
    assert hook_count(model) == 0


def _lock_is_held_elsewhere(model: nn.Module) -> bool:
    """Whether another thread finds the model's lock taken."""
    got: list[bool] = []

    def probe() -> None:
        lock = model_lock(model)
        ok = lock.acquire(timeout=0.05)
        if ok:
            lock.release()
        got.append(not ok)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got[0]


def test_engine_dead_zone_and_explainers_share_the_state_helper():
    from camwall.explainers import preserved
    from camwall.walls._deadzone import _eval_mode

    for block in (
        lambda m: held(m),
        lambda m: CamEngine(m, "1"),
        lambda m: preserved(m),
        lambda m: _eval_mode(m),
    ):
        model = _dirty()
        assert not _lock_is_held_elsewhere(model)
        with block(model):
            assert not model.training
            assert _lock_is_held_elsewhere(model)
        assert not _lock_is_held_elsewhere(model)
        assert [m.training for m in model.modules()] == [True, True, True, False]
        assert [p.requires_grad for p in model.parameters()] == [True, False]
