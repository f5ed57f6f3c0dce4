import subprocess
import sys

import pytest

import camwall
from camwall.cli import main
from camwall.errors import CamwallError
from camwall.registry import Registry


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


def test_registry_unknown_name_suggests():
    reg: Registry[int] = Registry("thing")
    reg.add("gradcam", 1)
    reg.add("hirescam", 2)
    assert reg.names("*cam") == ["gradcam", "hirescam"]
    with pytest.raises(CamwallError, match="Did you mean 'gradcam'"):
        reg.get("gradcan")
    with pytest.raises(KeyError):
        reg.add("gradcam", 3)
