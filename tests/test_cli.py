"""The ``camwall`` entry point: version, area discovery, registries, option helpers, aliases."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import camwall
from camwall.cli import build_parser, cli_modules, main
from camwall.errors import CamwallError
from camwall.registry import Registry, function_name

SRC = Path(camwall.__file__).parent


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"camwall {camwall.__version__}"


def test_python_dash_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "camwall", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: camwall" in out.stdout


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_registry_unknown_name_suggests():
    reg: Registry[_Named] = Registry("thing")
    grad = reg.add(_Named("gradcam"))
    reg.add(_Named("hirescam"))
    assert reg.get("gradcam") is grad
    assert reg.names("*cam") == ["gradcam", "hirescam"]
    with pytest.raises(CamwallError, match="Did you mean 'gradcam'"):
        reg.get("gradcan")
    with pytest.raises(KeyError, match="'gradcam' is already registered"):
        reg.add(_Named("gradcam"))
    with pytest.raises(TypeError, match="needs a non-empty name"):
        reg.add(_Named(""))
    assert len(reg) == 2


def test_registry_add_decorates_and_keys_functions_like_timm():
    reg: Registry = Registry("model", key=function_name)

    @reg.add
    def fashion_vgg() -> int:
        return 7

    assert fashion_vgg() == 7  # returned unchanged
    assert reg.names() == ["fashion-vgg"]
    assert reg.get("fashion-vgg") is fashion_vgg


def test_every_registry_keeps_its_names_and_order():
    from camwall.cams import METHODS
    from camwall.data import DATASETS
    from camwall.metrics import CONTROLS, METRICS
    from camwall.train._config import PRESETS
    from camwall.walls import MODELS

    assert METHODS.names() == [
        "gradcam", "hirescam", "gradcampp", "xgradcam", "layercam",
        "gradcamelementwise", "shapleycam", "eigencam", "eigengradcam", "segeigencam", "kpcacam",
        "scorecam", "ablationcam", "opticam", "fem", "randomcam", "finercam", "cam", "fullgrad",
        "rollout", "legrad", "smoothgradcampp", "sscam", "iscam", "sess", "refinecam",
    ]  # fmt: skip
    assert MODELS.names() == [
        "walled-vgg16", "simple-cnn", "fashion-vgg", "fashion-resnet", "fashion-grid-vgg",
        "walled-vit", "fashion-vit",
    ]  # fmt: skip
    assert METRICS.names() == [
        "wall_leakage", "l1_leakage", "any_leak", "peak_ratio", "relative_leakage",
        "grid_pointing",
    ]  # fmt: skip
    assert CONTROLS.names() == ["uniform", "random"]
    assert DATASETS.names() == ["fashion-stackmix", "fashion-stackpair", "fashion-grid"]
    assert PRESETS.names() == [
        "fashion-vgg",
        "fashion-resnet",
        "fashion-vit",
        "fashion-grid-vgg",
        "imagenet-vgg16",
    ]
    for reg in (METHODS, METRICS, CONTROLS, DATASETS, PRESETS):
        for name, entry in reg.items():
            assert entry.name == name  # the name is written once, on the object


def test_areas_are_discovered_in_declared_order():
    names = [m.__name__ for m in cli_modules()]
    assert names == [
        f"camwall.{a}.cli" for a in ("bench", "cams", "walls", "data", "train", "theory")
    ]


def test_a_new_subpackage_with_a_cli_module_is_found(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "zzdemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(
        "ORDER = 5\n"
        "def register(sub):\n"
        "    p = sub.add_parser('zzdemo', help='demo area')\n"
        "    p.set_defaults(func=lambda args: print('zzdemo ran') or 0)\n"
    )
    (tmp_path / "nocli").mkdir()
    (tmp_path / "nocli" / "__init__.py").write_text("")
    monkeypatch.setattr(camwall, "__path__", [*camwall.__path__, str(tmp_path)])
    for name in ("camwall.zzdemo", "camwall.zzdemo.cli", "camwall.nocli"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        names = [m.__name__ for m in cli_modules()]
        assert names[0] == "camwall.zzdemo.cli"  # ORDER 5 sorts before bench (10)
        assert "camwall.nocli.cli" not in names
        assert main(["zzdemo"]) == 0
        assert capsys.readouterr().out == "zzdemo ran\n"
    finally:
        for name in ("camwall.zzdemo", "camwall.zzdemo.cli", "camwall.nocli"):
            sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("argv", "dest", "value", "old", "new"),
    [
        (["cam", "ck", "a.png", "--layer", "9"], "target_layer", ["9"], "--layer",
         "--target-layer"),
        (["stackmix", "--source", ".", "--out", "o", "--force"], "overwrite", True, "--force",
         "--overwrite"),
        (["data", "export", "--dataset", "fashion-stackmix", "--out", "o", "--force"],
         "overwrite", True, "--force", "--overwrite"),
        (["data", "preview", "--out", "p.png", "--size", "32"], "image_size", 32, "--size",
         "--image-size"),
    ],
)  # fmt: skip
def test_old_spelling_is_a_hidden_alias_that_warns(tmp_path, monkeypatch, capsys, argv, dest,
                                                   value, old, new):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert err == f"camwall: warning: {old} is deprecated; use {new}\n"
    args = build_parser().parse_args([a if a != old else new for a in argv])
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == ""


def test_aliases_are_hidden_from_help():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command, old in (("cam", "--layer"), ("stackmix", "--force"), ("stackgen", "--force")):
        text = sub.choices[command].format_help()
        assert old not in text
        assert "--target-layer" in text or "--overwrite" in text


def test_one_flag_per_setting_across_commands():
    """Every sub-command that has a setting spells it the same way (no --layer next to
    --target-layer, no --force next to --overwrite, no --size next to --image-size)."""
    seen: set[str] = set()
    stack = [build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            if action.help == "==SUPPRESS==":
                continue
            seen.update(action.option_strings)
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
    assert {"--target-layer", "--overwrite", "--image-size", "--seed", "--out"} <= seen
    assert not {"--layer", "--force", "--size"} & seen


def test_cli_functions_are_short():
    """No function of the CLI modules is over 60 lines, except ``register`` (declarations)."""
    files = [SRC / "cli.py", SRC / "_cliargs.py", *SRC.glob("*/cli.py")]
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name != "register":
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > 60:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long


def test_handlers_follow_one_naming_convention():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    stack = list(sub.choices.items())
    while stack:
        command, parser = stack.pop()
        nested = [a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]
        if nested:
            stack.extend((f"{command} {k}", v) for k, v in nested[0].choices.items())
            continue
        func = parser.get_default("func")
        assert func.__name__ == "run_" + command.replace(" ", "_").replace("-", "_")
